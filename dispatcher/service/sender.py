"""The sender: deliver queued messages whose time has come, and record every attempt.

Holds are checked again just before delivery, because the account may have changed
since it was planned (a dispute filed this morning must stop this afternoon's SMS).
Failures follow one retry rule (:mod:`dispatcher.domain.retry`); the next attempt time
is stored on the outbox row.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dispatcher.channel import BatchChannel, Channel, Handover, Outbound, Receipt
from dispatcher.domain.account import Account
from dispatcher.domain.cap import Contact
from dispatcher.domain.decision import EndReason
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.policy import HoldReason, hold_because, hold_for
from dispatcher.domain.retry import RetryPolicy, next_attempt_at
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.domain.validity import PROVIDER_MIN, RULE_ID, WINDOW_CLOSING, validity
from dispatcher.domain.window import Verdict
from dispatcher.error import DeliveryError, PermanentDelivery
from dispatcher.service.ledger import ContactLedger
from dispatcher.service.planner import deferral_detail
from dispatcher.service.timing import ContactTiming
from dispatcher.store.sql import AttemptRecord, AuditEntry, Claim, ClaimedMessage, SqlStore

ACTOR = "system:sender"

log = logging.getLogger(__name__)


# Records an outcome that needs no delivery: (message_id, column values, audit records).
Settle = Callable[[str, Mapping[str, object], Iterable[AuditEntry]], None]


class _Written:
    """Outcomes of handed-over messages, written a few at a time.

    One transaction per message was what bounded delivery throughput (a round trip
    each); here outcomes are written together once 50 are waiting or the oldest has
    waited half a second, and always at the end of a batch. A crash in between leaves
    those messages ``sending``: after the lease they are reported as of unknown outcome,
    never resent, the same as a crash during the provider call.
    """

    def __init__(self, store: SqlStore, most: int = 50, longest: float = 0.5) -> None:
        self.store = store
        self.most = most
        self.longest = longest
        self._waiting: list[AttemptRecord] = []
        self._since = 0.0

    def add(
        self, message_id: str, values: Mapping[str, object], audit: Iterable[AuditEntry]
    ) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(AttemptRecord(message_id, values, tuple(audit)))
        if len(self._waiting) >= self.most or time.monotonic() - self._since >= self.longest:
            self.flush()

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        self.store.finish_sends(waiting)


@dataclass
class SendReport:
    """What one send pass did: outcomes by (channel, outcome), provider error codes by
    (channel, code), and each hand-over's delay after its due time (for metrics)."""

    now: datetime
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: list[tuple[str, float]] = field(default_factory=list)

    def add(self, channel: str, outcome: str) -> None:
        self.counts[(channel, outcome)] += 1

    def error(self, channel: str, code: str | None) -> None:
        self.errors[(channel, code or "unknown")] += 1

    def latency(self, channel: str, seconds: float) -> None:
        self.latencies.append((channel, max(0.0, seconds)))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Sender:
    def __init__(
        self,
        store: SqlStore,
        channels: Mapping[ChannelKind, Channel],
        retry: RetryPolicy,
        timing: ContactTiming,
        strategy: Strategy,
        *,
        batch_size: int = 500,
        concurrency: int = 8,
        unsubscribe_url: Callable[[str], str] | None = None,
        lease: timedelta = timedelta(minutes=15),
        jitter: Callable[[], float] = random.random,
        min_validity: timedelta = timedelta(seconds=300),
    ) -> None:
        self.store = store
        self.channels = channels
        self.retry = retry
        self.timing = timing
        self.strategy = strategy
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.unsubscribe_url = unsubscribe_url
        self.jitter = jitter
        self.lease = lease
        self.min_validity = min_validity
        # SMS that passed their checks -> when their contact window closes (None: no close
        # ahead); the validity handed to the provider is counted from it.
        self._window_end: dict[str, datetime | None] = {}
        self._pass = (datetime.min.replace(tzinfo=UTC), 0.0)

    async def send(self, now: datetime, *, stop: Callable[[], bool] = lambda: False) -> SendReport:
        """Deliver every queued message due at ``now``; each is claimed before it is sent.

        ``stop`` is asked before each batch: a service shutting down finishes the batch in
        hand and takes no new one.
        """
        report = SendReport(now=now)
        self._pass = (now, time.monotonic())
        # Batches a crashed run left behind go first, so none is taken for interrupted.
        await self.hand_over(now, report)
        self.give_up_interrupted(now, report)
        gate = asyncio.Semaphore(self.concurrency)
        while not stop():
            with self.store.claiming(now, self.batch_size, now - self.timing.lookback) as claim:
                if not claim.messages:
                    break
                ready = self._vet(claim, report)
            written = _Written(self.store)
            try:
                await asyncio.gather(
                    *(self._gated(gate, m, now, report, written.add) for m in ready)
                )
            finally:
                written.flush()
        await self.hand_over(now, report)
        for channel in self.channels.values():
            # Connection-holding channels (SMTP) close politely at the end of a run.
            close = getattr(channel, "close", None)
            if close is not None:
                await close()
        return report

    def _vet(self, claim: Claim, report: SendReport) -> list[ClaimedMessage]:
        """Decide, inside the claiming transaction, which messages may go now.

        The rest are held, deferred or expired right there, so a cap is judged against
        exactly what is sent or being sent (other workers' included) at this moment.
        """
        # What counts at the moment of sending is what went out; this batch's own
        # messages join the ledger one by one as each passes its checks.
        ledger = ContactLedger(claim.contacts)
        ready: list[ClaimedMessage] = []
        for message in claim.messages:
            account = claim.accounts.get(message.account_id)
            if account is not None:
                if self._held_back(message, account, claim, ledger, report):
                    continue
                ledger.add(message.message_id, account, message.channel, claim.now)
            ready.append(message)
        taken = claim.take([m.message_id for m in ready])
        for m in ready:
            if m.message_id not in taken:  # another worker has it
                self._window_end.pop(m.message_id, None)
        return [m for m in ready if m.message_id in taken]

    def give_up_interrupted(self, now: datetime, report: SendReport) -> None:
        """Messages left ``sending`` by a process that died are marked failed, not resent.

        Whether the provider got them is unknown; sending again could reach the customer
        twice (harassment), so a person decides, with the message in plain sight.
        Letters a batch channel still keeps (staged for the print house) are not
        interrupted: they are handed over by :meth:`hand_over`.
        """
        stale = self.store.stale_sending(now - self.lease)
        kept: set[str] = set()
        if stale:
            for kind in self.channels.values():
                if isinstance(kind, BatchChannel):
                    kept |= kind.pending()
        for message_id, account_id, channel, attempts in stale:
            if message_id in kept:
                continue
            error = "delivery interrupted: outcome unknown; check the provider before resending"
            self.store.finish_send(
                message_id,
                {
                    "status": MessageStatus.FAILED.value,
                    "attempts": attempts + 1,
                    "last_error": error,
                    "updated_at": now,
                },
                [
                    AuditEntry(
                        event="delivery_interrupted",
                        actor=ACTOR,
                        at=now,
                        account_id=account_id,
                        message_id=message_id,
                        detail={"error": error},
                    )
                ],
            )
            report.add(channel, "interrupted")

    async def hand_over(self, now: datetime, report: SendReport) -> None:
        """Let batch channels hand over what they keep, and record what they handed over.

        A batch is recorded (``handed_to_print``) only once the channel reports it
        complete at the destination, and acknowledged only after that, so a crash in
        between reports it again and it is recorded once (already recorded messages are
        skipped). A destination that cannot take it (TransientDelivery) is reported and
        retried at the next run; nothing is marked.
        """
        for kind, channel in self.channels.items():
            if not isinstance(channel, BatchChannel):
                continue
            try:
                await channel.hand_over(now)
            except DeliveryError as exc:
                report.error(kind.value, exc.code)
                log.warning("%s hand-over failed, retried next run: %s", kind.value, exc)
            for batch in channel.handed():
                self._handed(kind, batch, now, report)
                channel.acknowledge(batch.batch_id)

    def _handed(
        self, kind: ChannelKind, batch: Handover, now: datetime, report: SendReport
    ) -> None:
        records = [
            AttemptRecord(
                letter.message_id,
                {
                    "status": MessageStatus.HANDED_TO_PRINT.value,
                    "attempts": letter.attempt,
                    "sent_at": now,
                    "provider_message_id": batch.batch_id,
                    "artifact_path": letter.artifact_path,
                    "last_error": None,
                    "next_attempt_at": None,
                    "updated_at": now,
                },
                (
                    AuditEntry(
                        event="message_handed_to_print",
                        actor=ACTOR,
                        at=now,
                        account_id=letter.account_id,
                        message_id=letter.message_id,
                        detail={
                            "batch_id": batch.batch_id,
                            "mail_class": batch.mail_class,
                            "first_page": letter.first_page,
                            "pages": letter.pages,
                            "sha256": letter.sha256,
                            "attempt": letter.attempt,
                        },
                    ),
                ),
            )
            for letter in batch.letters
        ]
        for _ in range(self.store.finish_handover(records)):
            report.add(kind.value, MessageStatus.HANDED_TO_PRINT.value)

    async def _gated(
        self,
        gate: asyncio.Semaphore,
        message: ClaimedMessage,
        now: datetime,
        report: SendReport,
        settle: Settle,
    ) -> None:
        async with gate:
            await self._send_one(message, now, report, settle)

    def _handover_time(self) -> datetime:
        """``now`` of this pass plus the time the pass has taken so far: a long batch must
        not hand over a message with the validity it had at the start."""
        start, began = self._pass
        return start + timedelta(seconds=time.monotonic() - began)

    async def _send_one(
        self, message: ClaimedMessage, now: datetime, report: SendReport, settle: Settle
    ) -> None:
        attempt = message.attempts + 1
        valid_for = None
        if message.message_id in self._window_end:
            end = self._window_end.pop(message.message_id)
            left = validity(self._handover_time(), end, minimum=PROVIDER_MIN)
            if not left.go:
                # The window closed while the batch was under way: back to the queue at
                # the close, where the next pass defers it to the next window.
                self._record(
                    message,
                    now,
                    report,
                    "message_deferred",
                    {"status": MessageStatus.QUEUED.value, "scheduled_for": end},
                    {"reason": WINDOW_CLOSING, "rule_id": RULE_ID, "at": "handover"},
                    f"deferred:{WINDOW_CLOSING}",
                    settle=settle,
                )
                return
            valid_for = left.valid_for
        outbound = Outbound(
            message_id=message.message_id,
            account_id=message.account_id,
            channel=message.channel,
            recipient=message.recipient,
            body=message.body,
            subject=message.subject,
            body_html=message.body_html,
            locale=message.locale,
            stage=message.stage,
            attempt=attempt,
            unsubscribe_url=(
                self.unsubscribe_url(message.account_id)
                if self.unsubscribe_url and message.channel is ChannelKind.EMAIL
                else None
            ),
            valid_for=valid_for,
        )
        try:
            receipt: Receipt = await self.channels[message.channel].deliver(outbound)
        except DeliveryError as exc:
            report.error(message.channel.value, exc.code)
            self._failed(message, attempt, exc, now, report, settle)
            return
        if message.due_at is not None:
            report.latency(message.channel.value, (now - message.due_at).total_seconds())
        if receipt.deferred:
            # Kept by a batch channel; stays ``sending`` until its batch is handed over.
            settle(
                message.message_id,
                {"updated_at": now},
                [
                    self._audit(
                        "message_staged",
                        message,
                        now,
                        {"attempt": attempt, "artifact_path": receipt.artifact_path},
                    )
                ],
            )
            return
        self._record(
            message,
            now,
            report,
            "message_sent",
            {
                "status": MessageStatus.SENT.value,
                "attempts": attempt,
                "sent_at": now,
                "provider_message_id": receipt.provider_message_id,
                "artifact_path": receipt.artifact_path,
                "last_error": None,
                "next_attempt_at": None,
                # A new hand-over: what the provider said of an earlier one no longer holds.
                "delivery_status": None,
                "delivery_error": None,
                "delivery_updated_at": None,
            },
            {
                "attempt": attempt,
                "provider_message_id": receipt.provider_message_id,
                **({"valid_for_seconds": int(valid_for.total_seconds())} if valid_for else {}),
            },
            "sent",
            settle=settle,
        )

    def _held_back(
        self,
        message: ClaimedMessage,
        account: Account,
        claim: Claim,
        ledger: ContactLedger,
        report: SendReport,
    ) -> bool:
        """Check holds, windows, holidays and caps once more at the moment of sending.

        Returns True when the message must not go now: it is then held (with its reason)
        or deferred to the next allowed instant, and audited either way.
        """
        now = claim.now
        ended = self._ended(message, account, now)
        if ended is not None:
            self._record(
                message,
                now,
                report,
                "message_expired",
                {"status": MessageStatus.EXPIRED.value, "hold_reason": ended.value},
                {"reason": ended.value, "at": "send"},
                ended.value,
                settle=claim.finish,
            )
            return True
        hold = hold_for(account, message.channel, now)
        window_rule = None
        if hold is None:
            contacts = ledger.of(account, excluding=message.message_id)
            timing = self.timing.verdict(account, message.channel, now, contacts)
            if timing.allowed and message.channel is ChannelKind.SMS:
                timing = self._window_closing(message, account, now, contacts)
            if timing.allowed:
                return False
            if timing.next_allowed is not None:
                self._record(
                    message,
                    now,
                    report,
                    "message_deferred",
                    {
                        "status": MessageStatus.QUEUED.value,
                        "scheduled_for": timing.next_allowed,
                        "hold_reason": timing.reason,
                        "rule_id": timing.rule_id,
                    },
                    {**deferral_detail(timing), "at": "send"},
                    f"deferred:{timing.reason}",
                    settle=claim.finish,
                )
                return True
            hold, window_rule = hold_because(HoldReason.NO_CONTACT_WINDOW), timing.rule_id
        detail: dict[str, object] = {
            "reason": hold.reason.value,
            "rule_id": hold.rule_id,
            "at": "send",
        }
        if window_rule:
            detail["window_rule"] = window_rule
        self._record(
            message,
            now,
            report,
            "message_held",
            {
                "status": MessageStatus.HELD.value,
                "hold_reason": hold.reason.value,
                "rule_id": hold.rule_id,
                "hold_until": hold.until,
            },
            detail,
            f"held:{hold.reason.value}",
            settle=claim.finish,
        )
        return True

    def _window_closing(
        self, message: ClaimedMessage, account: Account, now: datetime, contacts: list[Contact]
    ) -> Verdict:
        """No late arrival (rule ``sms.validity.window``): an SMS goes only with at least
        ``min_validity`` left of its contact window, and carries the rest as its validity;
        with less, the verdict defers it to the next window."""
        end = self.timing.window_end(account, message.channel, now)
        if end is None or validity(now, end, minimum=self.min_validity).go:
            self._window_end[message.message_id] = end
            return Verdict(allowed=True)
        later = self.timing.verdict(account, message.channel, end, contacts)
        reopens = end if later.allowed else later.next_allowed
        return Verdict(False, WINDOW_CLOSING, RULE_ID, reopens)

    def _ended(self, message: ClaimedMessage, account: Account, now: datetime) -> EndReason | None:
        """Why a queued message can no longer be right: the account paid, started a new
        cycle or left the message's stage since it was planned (e.g. while it waited)."""
        if not account.collectible:
            return EndReason.NOT_COLLECTIBLE
        if account.cycle != message.cycle:
            return EndReason.CYCLE_ENDED
        stage = self.strategy.stage_for(days_past_due(account.due_date, account.timezone, now))
        if stage is None or stage.id != message.stage:
            return EndReason.STAGE_LEFT
        return None

    def _record(
        self,
        message: ClaimedMessage,
        now: datetime,
        report: SendReport,
        event: str,
        values: dict[str, object],
        detail: dict[str, object],
        outcome: str,
        *,
        settle: Settle | None = None,
    ) -> None:
        (settle or self.store.finish_send)(
            message.message_id,
            {**values, "updated_at": now},
            [self._audit(event, message, now, detail)],
        )
        report.add(message.channel.value, outcome)

    def _failed(
        self,
        message: ClaimedMessage,
        attempt: int,
        exc: DeliveryError,
        now: datetime,
        report: SendReport,
        settle: Settle,
    ) -> None:
        retry_at = None
        if not isinstance(exc, PermanentDelivery):
            retry_at = next_attempt_at(self.retry, attempt, now, self.jitter())
        status = MessageStatus.QUEUED if retry_at else MessageStatus.FAILED
        error = f"{exc.code}: {exc}" if exc.code else str(exc)
        self._record(
            message,
            now,
            report,
            "delivery_failed" if retry_at else "message_failed",
            {
                "status": status.value,
                "attempts": attempt,
                "next_attempt_at": retry_at,
                "last_error": error,
            },
            {
                "attempt": attempt,
                "error": error,
                "code": exc.code,
                "permanent": isinstance(exc, PermanentDelivery),
                "next_attempt_at": retry_at.isoformat() if retry_at else None,
            },
            "retry" if retry_at else "failed",
            settle=settle,
        )

    @staticmethod
    def _audit(
        event: str, message: ClaimedMessage, now: datetime, detail: dict[str, object]
    ) -> AuditEntry:
        return AuditEntry(
            event=event,
            actor=ACTOR,
            at=now,
            account_id=message.account_id,
            message_id=message.message_id,
            detail=detail,
        )
