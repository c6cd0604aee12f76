"""The planner: decide what is due for every account and write it to the outbox.

For each batch of accounts it asks the pure core (:func:`plan_account`) for decisions,
renders the messages that may go, and writes outbox rows, holds and audit records for
the batch in one transaction. Re-running it at the same ``now`` writes nothing new: the
idempotency key is unique and the core only decides what has no record yet.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TypeVar

from dispatcher.domain.account import Account
from dispatcher.domain.decision import (
    Decision,
    End,
    EndReason,
    Existing,
    HoldBack,
    Queue,
    next_review,
    plan_account,
)
from dispatcher.domain.message import WENT_OUT, MessageKey, MessageStatus
from dispatcher.domain.policy import Hold, HoldReason, hold_because
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.domain.window import Verdict
from dispatcher.error import TemplateError
from dispatcher.service.ledger import ContactLedger
from dispatcher.service.plan_pool import BatchPool, shareable
from dispatcher.service.timing import ContactTiming
from dispatcher.store.sql import (
    UPDATABLE_FIELDS,
    AuditEntry,
    ContactRow,
    Page,
    PlanWrite,
    Reviewing,
    SqlStore,
)
from dispatcher.template import RenderedMessage, TemplateSet
from dispatcher.template.context import Creditor, build_context

ACTOR = "system:planner"
_T = TypeVar("_T")
# Holds the planner itself settles that the clock alone can lift: a contact window may
# open in the weeks after the three searched; a render may depend on the day. Accounts
# with one are looked at again a day later rather than at their next turning point.
_RECHECKED_DAILY = frozenset({HoldReason.NO_CONTACT_WINDOW, HoldReason.RENDER_FAILED})
_DAY = timedelta(days=1)


@dataclass
class PlanReport:
    """What one plan run decided: counts by (stage, channel, outcome)."""

    now: datetime
    dry_run: bool
    accounts: int = 0
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    complete: bool = True

    def add(self, key: MessageKey, outcome: str) -> None:
        self.counts[(key.stage, key.channel.value, outcome)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def recipient_of(account: Account, channel: ChannelKind) -> str | None:
    """Where a message on ``channel`` goes: phone, email, or the letter's address block."""
    if channel is ChannelKind.SMS:
        return account.phone
    if channel is ChannelKind.EMAIL:
        return account.email
    if account.address is None:
        return None
    return "\n".join([account.full_name, *account.address.lines()])


def outbox_row(
    key: MessageKey, status: MessageStatus, dpd: int, now: datetime, **values: object
) -> dict[str, object]:
    """A complete outbox row: executemany needs every row to carry the same columns."""
    row: dict[str, object] = {
        "message_id": key.message_id,
        "idempotency_key": str(key),
        "account_id": key.account_id,
        "cycle": key.cycle,
        "stage": key.stage,
        "step": key.step,
        "channel": key.channel.value,
        "status": status.value,
        "hold_reason": None,
        "rule_id": None,
        "hold_until": None,
        "dpd": dpd,
        "locale": None,
        "recipient": None,
        "template_id": None,
        "template_version": None,
        "template_sha256": None,
        "subject": None,
        "body": None,
        "body_html": None,
        "body_sha256": None,
        "scheduled_for": None,
        "attempts": 0,
        "next_attempt_at": None,
        "sent_at": None,
        "provider_message_id": None,
        "artifact_path": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
    row.update(values)
    return row


@dataclass
class _Batch:
    """Collects one batch's writes and counts; knows how each outcome is recorded."""

    now: datetime
    report: PlanReport
    contacts: Callable[[], ContactLedger]
    write: PlanWrite = field(default_factory=PlanWrite)
    _ledger: ContactLedger | None = None
    # Accounts holding a message for a reason of _RECHECKED_DAILY.
    recheck: set[str] = field(default_factory=set)

    @property
    def ledger(self) -> ContactLedger:
        """The persons' contacts, read on first need: a re-plan that queues nothing
        (the usual case every few minutes) never pays for them."""
        if self._ledger is None:
            self._ledger = self.contacts()
        return self._ledger

    def row(self, row: dict[str, object], *, existing: bool) -> None:
        if existing:
            self.write.updates.append({k: row[k] for k in ("message_id", *UPDATABLE_FIELDS)})
        else:
            self.write.inserts.append(row)

    def audit(self, key: MessageKey, event: str, detail: Mapping[str, object]) -> None:
        self.write.audits.append(
            AuditEntry(
                event=event,
                actor=ACTOR,
                at=self.now,
                account_id=key.account_id,
                message_id=key.message_id,
                detail=detail,
            ).row()
        )

    def ended(self, decision: End) -> None:
        key = decision.key
        superseded = decision.reason is EndReason.SUPERSEDED
        status = MessageStatus.SKIPPED if superseded else MessageStatus.EXPIRED
        if decision.existing:
            self.write.ends.append(
                {
                    "message_id": key.message_id,
                    "status": status.value,
                    "hold_reason": decision.reason.value,
                    "updated_at": self.now,
                }
            )
        else:
            self.write.inserts.append(
                outbox_row(key, status, 0, self.now, hold_reason=decision.reason.value)
            )
        self.report.add(key, decision.reason.value)
        self.audit(
            key,
            f"message_{status.value}",
            {"reason": decision.reason.value, "superseded_by": decision.superseded_by},
        )

    def held(
        self, key: MessageKey, dpd: int, hold: Hold, *, existing: bool, error: str | None = None
    ) -> None:
        self.row(
            outbox_row(
                key,
                MessageStatus.HELD,
                dpd,
                self.now,
                hold_reason=hold.reason.value,
                rule_id=hold.rule_id,
                hold_until=hold.until,
            ),
            existing=existing,
        )
        self.report.add(key, f"held:{hold.reason.value}")
        detail: dict[str, object] = {
            "reason": hold.reason.value,
            "rule_id": hold.rule_id,
            "dpd": dpd,
            "until": hold.until.isoformat() if hold.until else None,
        }
        if error:
            detail["error"] = error
        self.audit(key, "message_held", detail)

    def queued(
        self,
        decision: Queue,
        locale: str,
        rendered: RenderedMessage,
        recipient: str | None,
        timing: Verdict,
    ) -> None:
        """Queue a rendered message; outside the contact window it waits for the next
        allowed instant (``scheduled_for``), with the deferral reason and rule on the row."""
        key = decision.key
        deferred = not timing.allowed
        self.row(
            outbox_row(
                key,
                MessageStatus.QUEUED,
                decision.dpd,
                self.now,
                locale=locale,
                recipient=recipient,
                template_id=rendered.template_id,
                # The content hash is the version (docs/TEMPLATES.md, "Versions and
                # approval"); the front matter's `version` is only a label for people.
                template_version=rendered.template_sha256,
                template_sha256=rendered.template_sha256,
                subject=rendered.subject,
                body=rendered.body,
                body_html=rendered.body_html,
                body_sha256=rendered.body_sha256,
                scheduled_for=timing.next_allowed if deferred else self.now,
                hold_reason=timing.reason,
                rule_id=timing.rule_id,
            ),
            existing=decision.release,
        )
        self.report.add(key, f"deferred:{timing.reason}" if deferred else "queued")
        if decision.release:
            self.audit(key, "hold_released", {})
        self.audit(
            key,
            "message_queued",
            {
                "stage": key.stage,
                "step": key.step,
                "channel": key.channel.value,
                "dpd": decision.dpd,
                "template_id": rendered.template_id,
                "template_version": rendered.template_sha256,
                "template_label": rendered.template_version,
                "template_sha256": rendered.template_sha256,
                "body_sha256": rendered.body_sha256,
            },
        )
        if deferred and timing.next_allowed is not None:
            self.audit(key, "message_deferred", deferral_detail(timing))


def deferral_detail(timing: Verdict) -> dict[str, object]:
    """The audit detail of a deferral: why, by which rule, until when."""
    return {
        "reason": timing.reason,
        "rule_id": timing.rule_id,
        "until": timing.next_allowed.isoformat() if timing.next_allowed else None,
    }


@dataclass(frozen=True, slots=True)
class Draft:
    """One decision with what it needs from templates, decided before any cap is counted.

    For a :class:`Queue` decision: the locale of the template found (None: no template),
    the rendered message, or the render error. Drafting needs only the account, its own
    messages and the templates, so batches can be drafted in worker processes; what
    depends on the person's other contacts (caps, ``scheduled_for``) is settled after, in
    account order, by :meth:`Planner._settle`.
    """

    decision: Decision
    locale: str | None = None
    rendered: RenderedMessage | None = None
    error: str | None = None
    recipient: str | None = None  # the phone, email or letter address block it goes to


@dataclass(frozen=True, slots=True)
class Deferred:
    """An account a batch settles only in its turn to write (:meth:`BatchPlanner.complete`):
    its person reaches accounts outside the batch. ``inserts_at``/``audits_at`` are where
    its rows go in the batch's write, so the written order is account order."""

    account: Account
    inserts_at: int
    audits_at: int
    drafts: list[Draft]
    review_seq: int


@dataclass
class BatchResult:
    """A planned batch: how many accounts it planned, the write for every account but the
    deferred ones, the outcome counts of those, and the deferred accounts."""

    accounts: int
    write: PlanWrite
    counts: Counter[tuple[str, str, str]]
    deferred: list[Deferred]


# `unknown` may have reached the person: it counts, the safe side of a cap.
COUNTED = (*WENT_OUT, MessageStatus.SENDING, MessageStatus.QUEUED, MessageStatus.UNKNOWN)


class BatchPlanner:
    """Reads, decides, renders and settles one batch of accounts: the work of a plan that
    can run in a worker process (:mod:`dispatcher.service.plan_pool`).

    Everything here depends on the batch's accounts, their own messages and the templates,
    except caps, which count per person. A person whose accounts all lie in the batch is
    settled by :meth:`plan_batch`; one who reaches outside it (a phone or email shared with
    an account of another batch) is deferred to :meth:`complete`, called once the batches
    before are written, so caps count exactly as in one batch of everything.
    """

    def __init__(
        self,
        templates: TemplateSet,
        strategy: Strategy,
        creditor: Creditor,
        timing: ContactTiming,
        catalogued: Collection[tuple[ChannelKind, str]] = (),
        review_within: timedelta = timedelta(days=7),
    ) -> None:
        self.templates = templates
        self.strategy = strategy
        self.creditor = creditor
        self.timing = timing
        self.catalogued = frozenset(catalogued)
        self.review_within = review_within

    @cached_property
    def review_key(self) -> str:
        """What a review is valid under: the strategy, and each template that may be sent
        with its hash, and those catalogued without an approved version. Another of any
        of them (a reload, an approval) puts every account up for review.

        The policy packs, holidays and creditor are left out on purpose: they shape only
        messages being queued (their time, their text), never which steps are due or held,
        and the hold they can cause (no contact window) is looked at daily anyway."""
        templates = sorted(
            (channel.value, name, locale, self.templates.info(channel, name, locale).sha256)
            for channel, name, locale in self.templates.names()
        )
        catalogued = sorted((channel.value, name) for channel, name in self.catalogued)
        config = [self.strategy.model_dump(mode="json"), templates, catalogued]
        encoded = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:32]

    def review(
        self, account: Account, now: datetime, *, recheck: bool, seq: int
    ) -> dict[str, object]:
        """The account's next review, as :class:`PlanWrite` records it: when time alone can
        change its plan (:func:`next_review`), a day on for a hold the planner re-checks
        daily, and never later than ``review_within``: a bound on any change made where
        no review is asked (an edit straight in the database, a time-zone rule update)."""
        latest = now + (_DAY if recheck else self.review_within)
        at = next_review(account, now, self.strategy)
        return {
            "account_id": account.account_id,
            "at": latest if at is None or at > latest else at,
            "key": self.review_key,
            "seq": seq,
        }

    def horizon(self, now: datetime) -> datetime:
        """Latest due date that can be in a stage at ``now``: earliest stage plus a zone day."""
        return now + timedelta(days=max(0, -self.strategy.earliest_dpd) + 1)

    def plan_batch(
        self, store: SqlStore, page: Page, now: datetime, reviewing: Reviewing | None = None
    ) -> BatchResult:
        """Plan the accounts of ``page`` (with ``reviewing``, those due for review), leaving
        out the writes of the deferred ones."""
        plannable = store.plannable_in(self.horizon(now).date(), page, reviewing)
        accounts, seqs = plannable.accounts, plannable.review_seqs
        existing = store.existing_messages([a.account_id for a in accounts])
        drafts = self.draft(accounts, existing, now)
        report = PlanReport(now=now, dry_run=False)
        shared: frozenset[str] = frozenset()
        contacts: list[ContactRow] = []
        if any(_needs_ledger(d) for mine in drafts for d in mine):
            found = store.batch_contacts(accounts, now - self.timing.lookback, COUNTED)
            contacts, shared = found.rows, _reaching_out(accounts, found.reaching_out)
        batch = _Batch(now, report, lambda: ContactLedger(contacts))
        deferred: list[Deferred] = []
        for account, mine in zip(accounts, drafts, strict=True):
            seq = seqs[account.account_id]
            if account.account_id in shared:
                deferred.append(
                    Deferred(account, len(batch.write.inserts), len(batch.write.audits), mine, seq)
                )
                continue
            for draft in mine:
                self.settle(account, draft, batch)
            recheck = account.account_id in batch.recheck
            batch.write.reviews.append(self.review(account, now, recheck=recheck, seq=seq))
        return BatchResult(len(accounts), batch.write, report.counts, deferred)

    def write_batch(
        self, store: SqlStore, result: BatchResult, now: datetime, *, dry_run: bool
    ) -> None:
        """Settle the batch's deferred accounts and write it (nothing with ``dry_run``);
        call it in page order, once the batches before are written."""
        write = self.complete(store, result, now)
        if not dry_run:
            store.apply_plan(write)

    def complete(self, store: SqlStore, result: BatchResult, now: datetime) -> PlanWrite:
        """The batch's whole write: its deferred accounts settled against what the batches
        before wrote (call it once they are written), their rows put where account order
        puts them and their outcomes added to ``result.counts``."""
        if not result.deferred:
            return result.write
        accounts = [d.account for d in result.deferred]
        since = now - self.timing.lookback
        report = PlanReport(now=now, dry_run=False)
        late = _Batch(now, report, lambda: ContactLedger(store.contacts(accounts, since, COUNTED)))
        inserts: list[tuple[int, int, int]] = []  # (position in the batch's rows, from, to)
        audits: list[tuple[int, int, int]] = []
        for account, deferred in zip(accounts, result.deferred, strict=True):
            rows, records = len(late.write.inserts), len(late.write.audits)
            for draft in deferred.drafts:
                self.settle(account, draft, late)
            recheck = account.account_id in late.recheck
            late.write.reviews.append(
                self.review(account, now, recheck=recheck, seq=deferred.review_seq)
            )
            inserts.append((deferred.inserts_at, rows, len(late.write.inserts)))
            audits.append((deferred.audits_at, records, len(late.write.audits)))
        result.counts.update(report.counts)
        write = result.write
        return PlanWrite(
            inserts=_splice(write.inserts, late.write.inserts, inserts),
            updates=write.updates + late.write.updates,
            ends=write.ends + late.write.ends,
            audits=_splice(write.audits, late.write.audits, audits),
            reviews=write.reviews + late.write.reviews,
        )

    def draft(
        self,
        accounts: Sequence[Account],
        existing: Mapping[str, Sequence[Existing]],
        now: datetime,
    ) -> list[list[Draft]]:
        """The drafts of each account of ``accounts``, in order (rule ids: see plan_account)."""
        return [
            [
                self._draft(account, decision, now)
                for decision in plan_account(
                    account, now, self.strategy, existing.get(account.account_id, ())
                )
            ]
            for account in accounts
        ]

    def _draft(self, account: Account, decision: Decision, now: datetime) -> Draft:
        if not isinstance(decision, Queue):
            return Draft(decision)
        locale = self._locale(account, decision)
        if locale is None:
            return Draft(decision)
        context = build_context(
            account, dpd=decision.dpd, stage_id=decision.stage.id, creditor=self.creditor, now=now
        )
        try:
            rendered = self.templates.render(
                decision.key.channel, decision.step.template, locale, context
            )
        except TemplateError as exc:
            return Draft(decision, locale, error=str(exc))
        return Draft(
            decision, locale, rendered, recipient=recipient_of(account, decision.key.channel)
        )

    def _locale(self, account: Account, decision: Queue) -> str | None:
        """The account's own locale, else the strategy's default, if a template exists."""
        channel, name = decision.step.channel, decision.step.template
        for locale in (account.locale, self.strategy.default_locale):
            if self.templates.has(channel, name, locale):
                return locale
        return None

    def settle(self, account: Account, draft: Draft, batch: _Batch) -> None:
        """Record a drafted decision in ``batch``: counted against the person's caps and
        timed by the contact window if it is to go."""
        decision = draft.decision
        if isinstance(decision, End):
            batch.ended(decision)
        elif isinstance(decision, HoldBack):
            batch.held(decision.key, decision.dpd, decision.hold, existing=decision.update)
        else:
            self._queue(account, decision, draft, batch)

    def _queue(self, account: Account, decision: Queue, draft: Draft, batch: _Batch) -> None:
        """Queue a drafted message for its first allowed instant.

        A missing or failing template, or no contact window shared by every zone the
        customer may be in, holds it instead, visibly; a message still held for the same
        reason as at the last plan is left as it is (no new audit record every run).
        """
        key, template = decision.key, decision.step.template

        def hold(reason: HoldReason, error: str) -> None:
            if reason in _RECHECKED_DAILY:
                batch.recheck.add(account.account_id)
            if decision.held_for != reason.value:
                batch.held(
                    key, decision.dpd, hold_because(reason), existing=decision.release, error=error
                )

        locale = draft.locale
        if locale is None:
            wanted = (
                f"{key.channel.value} template {template!r} "
                f"for {account.locale} or {self.strategy.default_locale}"
            )
            if (key.channel, template) in self.catalogued:
                # HR-12: a draft is never sent, and nothing else stands in for it.
                hold(
                    HoldReason.TEMPLATE_NOT_APPROVED,
                    f"no approved version of the {wanted}; "
                    "a second person approves one with `dispatcher templates approve`",
                )
            else:
                hold(HoldReason.TEMPLATE_MISSING, f"no {wanted}")
            return
        rendered = draft.rendered
        if rendered is None:
            hold(HoldReason.RENDER_FAILED, draft.error or "render failed")
            return
        contacts = batch.ledger.of(account, excluding=key.message_id)
        verdict = self.timing.verdict(account, key.channel, batch.now, contacts)
        if not verdict.allowed and verdict.next_allowed is None:
            hold(
                HoldReason.NO_CONTACT_WINDOW,
                f"no instant in the next weeks is allowed by "
                f"{verdict.rule_id} in every candidate zone of the account",
            )
            return
        batch.queued(decision, locale, rendered, draft.recipient, verdict)
        batch.ledger.add(key.message_id, account, key.channel, verdict.next_allowed or batch.now)


def _needs_ledger(draft: Draft) -> bool:
    """A rendered message to queue is the only decision that counts the person's contacts."""
    return draft.rendered is not None and isinstance(draft.decision, Queue)


def _reaching_out(accounts: Sequence[Account], outside: Collection[str]) -> frozenset[str]:
    """The ids of the accounts whose person reaches past the batch: those sharing a phone or
    email with an account outside it, and, since a person is whoever shares either, every
    account of the batch linked to those through a shared phone or email."""
    reaching = set(outside)
    shared: set[str] = set()
    grew = True
    while grew:
        grew = False
        for account in accounts:
            if account.account_id in shared:
                continue
            keys = {k for k in (account.phone, account.email) if k}
            if keys & reaching:
                shared.add(account.account_id)
                reaching |= keys
                grew = True
    return frozenset(shared)


class Planner:
    def __init__(
        self,
        store: SqlStore,
        templates: TemplateSet,
        strategy: Strategy,
        creditor: Creditor,
        timing: ContactTiming,
        *,
        batch_size: int = 2000,
        catalogued: Collection[tuple[ChannelKind, str]] = (),
        workers: int = 1,
        review_within: timedelta = timedelta(days=7),
    ) -> None:
        """``templates`` is what may be sent: the approved versions (``App.planner``).

        ``catalogued`` names the templates (channel, id) with any version in the catalog:
        a step whose template has none approved is then held ``template_not_approved``
        rather than ``template_missing``. ``workers`` > 1 plans batches (read, decide,
        render, settle) in that many worker processes while this one lists the pages,
        settles the accounts they defer and writes; the result is the same as with one
        (tests/integration/test_plan_pool.py).
        """
        self.store = store
        self.batch_size = batch_size
        self.workers = workers
        self.batches = BatchPlanner(
            templates, strategy, creditor, timing, catalogued, review_within=review_within
        )

    @property
    def templates(self) -> TemplateSet:
        """What this planner may send: the approved version of each template."""
        return self.batches.templates

    def horizon(self, now: datetime) -> datetime:
        return self.batches.horizon(now)

    def reviewing(self, now: datetime, *, every: bool = False) -> Reviewing | None:
        """Which accounts a plan at ``now`` looks at: those due for review (None: every
        plannable account, with ``every``)."""
        return None if every else Reviewing(now, self.batches.review_key)

    def count(self, now: datetime, *, every: bool = False) -> int:
        """How many accounts :meth:`plan` will look at (for progress)."""
        return self.store.count_plannable(
            self.horizon(now).date(), self.reviewing(now, every=every)
        )

    def plan(
        self,
        now: datetime,
        *,
        dry_run: bool = False,
        every: bool = False,
        on_progress: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> PlanReport:
        """Plan at ``now`` the accounts due for review (with ``every``, every plannable
        account: the same decisions, at the cost of looking at all); with ``dry_run``
        decide and render but write nothing (reviews included).

        ``stop`` is asked between batches: a service shutting down commits the batch in
        hand and leaves the rest to the next run (``report.complete`` is then False).
        Each batch is written in one transaction, so an interruption at any point leaves
        whole batches or nothing of a batch.
        """
        report = PlanReport(now=now, dry_run=dry_run)
        reviewing = self.reviewing(now, every=every)
        pages: Iterator[Page] = self.store.plannable_pages(
            self.horizon(now).date(), self.batch_size, reviewing
        )
        parallel = False
        if self.workers > 1 and shareable(self.store):
            # Workers take a second or two to start: worth it only from two batches on.
            ahead = list(itertools.islice(pages, 2))
            parallel = len(ahead) > 1
            pages = itertools.chain(ahead, pages)
        if parallel:
            with BatchPool(self.batches, self.store, self.workers) as pool:
                written = pool.written(pages, now, reviewing, dry_run=dry_run, stop=stop)
                for accounts, counts in written:
                    report.counts.update(counts)
                    report.accounts += accounts
                    if on_progress is not None:
                        on_progress(accounts)
                report.complete = not pool.stopped
            return report
        for page in pages:
            if stop is not None and stop():
                report.complete = False
                break
            result = self.batches.plan_batch(self.store, page, now, reviewing)
            self.batches.write_batch(self.store, result, now, dry_run=dry_run)
            report.counts.update(result.counts)
            report.accounts += result.accounts
            if on_progress is not None:
                on_progress(result.accounts)
        return report


def _splice(base: list[_T], extra: list[_T], cuts: Sequence[tuple[int, int, int]]) -> list[_T]:
    """``base`` with ``extra[start:end]`` put in before ``base[at]`` for each (at, start, end),
    the cuts in order of ``at``."""
    out: list[_T] = []
    done = 0
    for at, start, end in cuts:
        out += base[done:at]
        out += extra[start:end]
        done = at
    out += base[done:]
    return out
