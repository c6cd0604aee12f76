"""The sender: deliver queued messages whose time has come, and record every attempt.

Holds are checked again just before delivery, because the account may have changed
since it was planned (a dispute filed this morning must stop this afternoon's SMS).
Failures follow one retry rule (:mod:`dispatcher.domain.retry`); the next attempt time
is stored on the outbox row. A provider answer that is about the recipient (opted out,
invalid number or mailbox) also places a hold, so later messages are held, not sent to
the provider again.

Never twice, even after a crash: a message is marked ``sending`` before any provider
call. One still ``sending`` after the lease was interrupted; :meth:`Sender.reconcile`
asks the channel's provider whether it has it (found → ``sent`` with its id; not found →
``queued`` again, safe because the provider never had it). A channel that cannot be
asked (SMTP) is stamped just before each hand-over instead: never stamped → queued
again; stamped → ``unknown``, for a person to resolve. See docs/DELIVERY.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from dispatcher.channel import (
    BatchChannel,
    Channel,
    Found,
    Handover,
    Lookup,
    NotFound,
    Outbound,
    PrintBatch,
    Receipt,
    Reconciler,
)
from dispatcher.domain.account import Account
from dispatcher.domain.cap import Contact
from dispatcher.domain.decision import EndReason
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.policy import RULE_BY_REASON, HoldReason, hold_because, hold_for
from dispatcher.domain.retry import RetryPolicy, next_attempt_at
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.domain.validity import PROVIDER_MIN, RULE_ID, WINDOW_CLOSING, validity
from dispatcher.domain.window import Verdict
from dispatcher.error import DeliveryError, PermanentDelivery, UncertainDelivery
from dispatcher.service.ledger import ContactLedger
from dispatcher.service.planner import deferral_detail
from dispatcher.service.timing import ContactTiming
from dispatcher.store.sql import (
    AttemptRecord,
    AuditEntry,
    Claim,
    ClaimedMessage,
    ProviderHold,
    SqlStore,
    StaleSend,
)

ACTOR = "system:sender"

log = logging.getLogger(__name__)


# Records an outcome that needs no delivery: (message_id, column values, audit records).
Settle = Callable[[str, Mapping[str, object], Iterable[AuditEntry]], None]


class _Written:
    """Outcomes of handed-over messages, written a few at a time.

    One transaction per message was what bounded delivery throughput (a round trip
    each); here outcomes are written together once 50 are waiting or the oldest has
    waited half a second, and always at the end of a batch. A crash in between leaves
    those messages ``sending``: after the lease reconciliation looks them up at the
    provider, the same as a crash during the provider call.

    Before a hand-over to a channel that cannot be looked up (SMTP), what is waiting is
    written together with that message's hand-over stamp, so a crash leaves at most the
    one message in flight of unknown outcome, not every buffered one.
    """

    def __init__(self, store: SqlStore, most: int = 50, longest: float = 0.5) -> None:
        self.store = store
        self.most = most
        self.longest = longest
        self._waiting: list[AttemptRecord] = []
        self._since = 0.0

    def add(
        self,
        message_id: str,
        values: Mapping[str, object],
        audit: Iterable[AuditEntry],
        holds: Iterable[ProviderHold] = (),
    ) -> None:
        if not self._waiting:
            self._since = time.monotonic()
        self._waiting.append(AttemptRecord(message_id, values, tuple(audit), tuple(holds)))
        if len(self._waiting) >= self.most or time.monotonic() - self._since >= self.longest:
            self.flush()

    def flush(self, handing_over: tuple[str, datetime] | None = None) -> None:
        waiting, self._waiting = self._waiting, []
        self.store.finish_sends(waiting, [handing_over] if handing_over else [])


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
        await self.reconcile(now, report)
        gate = asyncio.Semaphore(self.concurrency)
        # One hand-over at a time per channel that cannot be looked up, so its stamp is
        # written just before the message goes (and a crash leaves only that one unknown).
        serial = {kind: asyncio.Lock() for kind in self.channels}
        limit = self.claim_size()
        while not stop():
            with self.store.claiming(now, limit, now - self.timing.lookback) as claim:
                if not claim.messages:
                    break
                ready = self._vet(claim, report)
            written = _Written(self.store)
            try:
                await asyncio.gather(
                    *(self._gated(gate, serial, m, now, report, written) for m in ready)
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

    def claim_size(self) -> int:
        """How many messages one pass claims: at most what the slowest rate-limited channel
        hands over in a tenth of the lease, so no claimed message waits for its turn in a
        bucket until it looks abandoned (reconciliation would then look it up, requeue
        it, and the live worker would still send it: twice)."""
        rates = [
            rate.per_second
            for channel in self.channels.values()
            if (rate := getattr(channel, "rate", None)) is not None
        ]
        if not rates:
            return self.batch_size
        return max(1, min(self.batch_size, int(min(rates) * self.lease.total_seconds() / 10)))

    async def reconcile(self, now: datetime, report: SendReport) -> None:
        """Settle messages left ``sending`` past the lease, without ever sending one twice.

        The process delivering them died, or the provider never answered. A channel that
        can look messages up (:class:`~dispatcher.channel.Reconciler`: Twilio, the file
        sinks) is asked: found → ``sent`` with the provider's id; not found → ``queued``
        again, which is safe because the provider never had it (the lease is far longer
        than a request can take, so no request of the dead process is still under way);
        the provider cannot be asked now → left for the next round. For any other channel
        (SMTP) a message never stamped as handed over is queued again; a stamped one is
        ``unknown``: whether the customer got it cannot be known, so a person decides
        (``dispatcher messages resolve``), never an automatic resend (harassment).
        """
        stale_sends = self.store.stale_sends(now - self.lease)
        # Letters a batch channel still keeps (staged for the print house) are not
        # interrupted: :meth:`hand_over` hands them over.
        kept: set[str] = set()
        if stale_sends:
            for kind in self.channels.values():
                if isinstance(kind, BatchChannel):
                    kept |= kind.pending()
        for stale in stale_sends:
            if stale.message_id in kept:
                continue
            channel = self.channels.get(stale.channel)
            if isinstance(channel, Reconciler):
                handover = Handover(
                    message_id=stale.message_id,
                    recipient=stale.recipient,
                    body=stale.body,
                    claimed_at=stale.updated_at,
                    known_ids=self.store.provider_ids_to(stale.recipient, stale.message_id),
                )
                found: Lookup | None = await channel.lookup(handover)
            elif stale.handed_over_at is None:
                found = NotFound()
            else:
                found = None
            self._settle_stale(stale, found, now, report)

    def _settle_stale(
        self, stale: StaleSend, found: Lookup | None, now: datetime, report: SendReport
    ) -> None:
        audit = AuditEntry(
            event="delivery_reconciled",
            actor=ACTOR,
            at=now,
            account_id=stale.account_id,
            message_id=stale.message_id,
        )
        values: dict[str, object]
        if isinstance(found, Found):
            values = {
                "status": MessageStatus.SENT.value,
                "attempts": stale.attempts + 1,
                "sent_at": stale.handed_over_at or stale.updated_at,
                "provider_message_id": found.provider_message_id,
                "artifact_path": found.artifact_path,
                "last_error": None,
                "next_attempt_at": None,
            }
            detail: dict[str, object] = {
                "found": True,
                "provider_message_id": found.provider_message_id,
            }
            outcome = "reconciled:sent"
        elif isinstance(found, NotFound):
            values = {
                "status": MessageStatus.QUEUED.value,
                "sent_at": None,
                "next_attempt_at": None,
                "last_error": "delivery interrupted before the provider took it; queued again",
            }
            detail = {"found": False, "then": "queued"}
            outcome = "reconciled:queued"
        elif found is None:
            error = (
                "delivery interrupted after the hand-over: outcome unknown; check the "
                "provider, then `dispatcher messages resolve`"
            )
            values = {
                "status": MessageStatus.UNKNOWN.value,
                "attempts": stale.attempts + 1,
                "last_error": error,
            }
            audit = replace(audit, event="delivery_interrupted")
            detail = {"error": error}
            outcome = "unknown"
        else:
            # The provider could not be asked (an outage): the row stays as it is and the
            # next round asks again; nothing is sent meanwhile.
            report.add(stale.channel.value, "reconcile_pending")
            return
        settled = self.store.settle_stale(
            stale.message_id,
            stale.updated_at,
            {**values, "updated_at": now},
            [replace(audit, detail=detail)],
        )
        if settled:
            report.add(stale.channel.value, outcome)

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
        self, kind: ChannelKind, batch: PrintBatch, now: datetime, report: SendReport
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
        serial: Mapping[ChannelKind, asyncio.Lock],
        message: ClaimedMessage,
        now: datetime,
        report: SendReport,
        written: _Written,
    ) -> None:
        async with gate:
            if isinstance(self.channels[message.channel], Reconciler):
                await self._send_one(message, now, report, written)
                return
            async with serial[message.channel]:
                written.flush(handing_over=(message.message_id, now))
                await self._send_one(message, now, report, written)

    def _handover_time(self) -> datetime:
        """``now`` of this pass plus the time the pass has taken so far: a long batch must
        not hand over a message with the validity it had at the start."""
        start, began = self._pass
        return start + timedelta(seconds=time.monotonic() - began)

    async def _send_one(
        self, message: ClaimedMessage, now: datetime, report: SendReport, written: _Written
    ) -> None:
        settle = written.add
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
        except UncertainDelivery as exc:
            report.error(message.channel.value, exc.code)
            self._unconfirmed(message, attempt, exc, now, report, settle)
            return
        except DeliveryError as exc:
            report.error(message.channel.value, exc.code)
            self._failed(message, attempt, exc, now, report, written)
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

    def _unconfirmed(
        self,
        message: ClaimedMessage,
        attempt: int,
        exc: UncertainDelivery,
        now: datetime,
        report: SendReport,
        settle: Settle,
    ) -> None:
        """The provider may have the message: never retried blindly. A channel that can
        look it up keeps it ``sending`` for reconciliation after the lease (by then the
        provider has finished with the request); any other makes it ``unknown``."""
        error = f"{exc.code}: {exc}" if exc.code else str(exc)
        lookup = isinstance(self.channels[message.channel], Reconciler)
        status = MessageStatus.SENDING if lookup else MessageStatus.UNKNOWN
        self._record(
            message,
            now,
            report,
            "delivery_unconfirmed",
            {"status": status.value, "attempts": attempt, "last_error": error},
            {
                "attempt": attempt,
                "error": error,
                "code": exc.code,
                "then": "lookup" if lookup else "person",
            },
            "unconfirmed" if lookup else "unknown",
            settle=settle,
        )

    def _failed(
        self,
        message: ClaimedMessage,
        attempt: int,
        exc: DeliveryError,
        now: datetime,
        report: SendReport,
        written: _Written,
    ) -> None:
        retry_at = None
        if not isinstance(exc, PermanentDelivery):
            retry_at = next_attempt_at(self.retry, attempt, now, self.jitter())
        status = MessageStatus.QUEUED if retry_at else MessageStatus.FAILED
        error = f"{exc.code}: {exc}" if exc.code else str(exc)
        values: dict[str, object] = {
            "status": status.value,
            "attempts": attempt,
            "next_attempt_at": retry_at,
            "last_error": error,
            # Not delivered: no hand-over stamp stays behind (it would read as "sent at").
            "sent_at": None,
        }
        detail: dict[str, object] = {
            "attempt": attempt,
            "error": error,
            "code": exc.code,
            "permanent": isinstance(exc, PermanentDelivery),
            "next_attempt_at": retry_at.isoformat() if retry_at else None,
        }
        holds: list[ProviderHold] = []
        if exc.hold is not None:
            reason = HoldReason(exc.hold)
            values.update(hold_reason=reason.value, rule_id=RULE_BY_REASON[reason].id)
            detail["hold"] = reason.value
            holds.append(
                ProviderHold(
                    account_id=message.account_id,
                    reason=reason.value,
                    channel=message.channel.value,
                    key="phone" if message.channel is ChannelKind.SMS else "email",
                    value=message.recipient,
                    source=f"provider:{exc.code or message.channel.value}",
                    note=f"the provider answered {error} to message {message.message_id}",
                    at=now,
                )
            )

        def settle(
            message_id: str, values: Mapping[str, object], audit: Iterable[AuditEntry]
        ) -> None:
            written.add(message_id, values, audit, holds)

        self._record(
            message,
            now,
            report,
            "delivery_failed" if retry_at else "message_failed",
            values,
            detail,
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
