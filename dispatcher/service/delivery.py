"""Delivery status reported by the provider after hand-over (Twilio status callbacks).

A message handed over stays ``sent``: that is what we did. What the provider later says
(queued, sent, delivered, undelivered, failed, with an error code) is recorded beside it
as its *delivery* status, every report as an audit record. Reports arrive out of order and
more than once; the recorded delivery status only moves forward (a late ``sent`` never
overwrites ``delivered``).

One report changes more than the record: ``undelivered``/``failed`` with Twilio error
30036 (validity period expired) means the message was dropped unseen, because it could not
reach the handset before its contact window closed (rule ``sms.validity.window``). It is
queued again for the next allowed instant (a new attempt, audited), never silently lost;
after ``max_attempts`` hand-overs it is ``failed`` for a person to see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from dispatcher.clock import Clock
from dispatcher.domain.message import NOT_DELIVERED, MessageStatus
from dispatcher.domain.policy import HoldReason, hold_because
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.validity import RULE_ID
from dispatcher.service.timing import ContactTiming
from dispatcher.store.sql import AuditEntry, SqlStore, Tracked

ACTOR = "webhook:twilio"
# Twilio's message statuses in the order a message moves through them; a report never
# moves the recorded status back. Equal ranks: the first report wins.
RANK: dict[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "canceled": 3,
    "failed": 3,
    "undelivered": 3,
    "partially_delivered": 3,
    "delivered": 4,
    "read": 5,
}
# Twilio error 30036: "Validity Period Expired" (the message was dropped, never delivered).
VALIDITY_EXPIRED = "30036"
REQUEUE_REASON = "validity_expired"


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One status callback: the provider's id for the message, its status, error code."""

    provider_message_id: str
    status: str
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """What a report did: found the message?, changed its delivery status?, re-queued it
    (or failed it, attempts exhausted)?"""

    found: bool
    message_id: str | None = None
    changed: bool = False
    requeued_for: datetime | None = None
    failed: bool = False


def record_status(
    store: SqlStore,
    timing: ContactTiming,
    report: StatusReport,
    now: datetime,
    *,
    max_attempts: int,
) -> StatusOutcome:
    """Apply one status report to the message it is about, audited (see module doc)."""
    status = report.status.strip().lower()
    code = (report.error_code or "").strip() or None
    with store.tracking(report.provider_message_id) as tracked:
        message = tracked.message
        if message is None:
            return StatusOutcome(found=False)
        previous = message["delivery_status"]
        known = status in RANK
        changed = known and (previous is None or RANK[status] > RANK.get(previous, -1))
        if changed:
            tracked.update(
                {
                    "delivery_status": status,
                    "delivery_error": code,
                    "delivery_updated_at": now,
                    "updated_at": now,
                }
            )
        tracked.audit(
            [
                AuditEntry(
                    "delivery_status_received",
                    ACTOR,
                    now,
                    message["account_id"],
                    message["message_id"],
                    {
                        "provider_message_id": report.provider_message_id,
                        "status": status,
                        "error_code": code,
                        "previous": previous,
                        "applied": changed,
                        **({} if known else {"unknown_status": True}),
                    },
                )
            ]
        )
        outcome = StatusOutcome(found=True, message_id=message["message_id"], changed=changed)
        if (
            changed
            and status in NOT_DELIVERED
            and code == VALIDITY_EXPIRED
            and message["status"] == MessageStatus.SENT.value
        ):
            return _requeue(tracked, timing, now, max_attempts, outcome)
        return outcome


def _requeue(
    tracked: Tracked,
    timing: ContactTiming,
    now: datetime,
    max_attempts: int,
    outcome: StatusOutcome,
) -> StatusOutcome:
    """The provider dropped the message at the end of its validity: queue it again for the
    next allowed instant (the sender checks holds, caps and the window again then)."""
    message = tracked.message
    assert message is not None
    account = tracked.account()
    error = f"twilio:{VALIDITY_EXPIRED}: not delivered before its contact window closed"
    base = {"message_id": message["message_id"], "account_id": message["account_id"]}
    if message["attempts"] >= max_attempts:
        tracked.update(
            {"status": MessageStatus.FAILED.value, "last_error": error, "updated_at": now}
        )
        tracked.audit(
            [
                AuditEntry(
                    "message_failed",
                    ACTOR,
                    now,
                    base["account_id"],
                    base["message_id"],
                    {
                        "error": error,
                        "code": f"twilio:{VALIDITY_EXPIRED}",
                        "attempts": message["attempts"],
                        "permanent": False,
                        "reason": "attempts exhausted",
                    },
                )
            ]
        )
        return StatusOutcome(True, outcome.message_id, outcome.changed, failed=True)
    at: datetime | None = None
    if account is not None:
        verdict = timing.verdict(account, ChannelKind(message["channel"]), now)
        at = now if verdict.allowed else verdict.next_allowed
    if at is None:
        hold = hold_because(HoldReason.NO_CONTACT_WINDOW)
        values: dict[str, object] = {
            "status": MessageStatus.HELD.value,
            "hold_reason": hold.reason.value,
            "rule_id": hold.rule_id,
        }
    else:
        values = {
            "status": MessageStatus.QUEUED.value,
            "scheduled_for": at,
            "hold_reason": REQUEUE_REASON,
            "rule_id": RULE_ID,
        }
    tracked.update(
        {
            **values,
            "sent_at": None,  # it never reached the customer: it counts for no cap
            "next_attempt_at": None,
            "last_error": error,
            "updated_at": now,
        }
    )
    tracked.audit(
        [
            AuditEntry(
                "message_requeued",
                ACTOR,
                now,
                base["account_id"],
                base["message_id"],
                {
                    "reason": REQUEUE_REASON,
                    "rule_id": RULE_ID,
                    "code": f"twilio:{VALIDITY_EXPIRED}",
                    "previous_provider_message_id": message["provider_message_id"],
                    "attempts": message["attempts"],
                    "until": at.isoformat() if at else None,
                    "status": values["status"],
                },
            )
        ]
    )
    return StatusOutcome(True, outcome.message_id, outcome.changed, requeued_for=at)


def record_status_waiting(
    store: SqlStore,
    timing: ContactTiming,
    report: StatusReport,
    clock: Clock,
    *,
    max_attempts: int,
    wait_seconds: float = 2.0,
    poll_seconds: float = 0.2,
) -> StatusOutcome:
    """:func:`record_status`, looking again for a little while when no message has the id.

    The sender writes outcomes a few at a time (within half a second), so a provider's
    first callbacks can come before the message's provider id is stored; a short wait
    catches those. A report for an id that never appears changes nothing.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        outcome = record_status(store, timing, report, clock.now(), max_attempts=max_attempts)
        if outcome.found or time.monotonic() >= deadline:
            return outcome
        time.sleep(poll_seconds)
