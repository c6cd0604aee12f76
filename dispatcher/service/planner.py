"""The planner: decide what is due for every account and write it to the outbox.

For each batch of accounts it asks the pure core (:func:`plan_account`) for decisions,
renders the messages that may go, and writes outbox rows, holds and audit records for
the batch in one transaction. Re-running it at the same ``now`` writes nothing new: the
idempotency key is unique and the core only decides what has no record yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dispatcher.domain.account import Account
from dispatcher.domain.decision import End, EndReason, HoldBack, Queue, plan_account
from dispatcher.domain.message import MessageKey, MessageStatus
from dispatcher.domain.policy import HoldReason
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.error import TemplateError
from dispatcher.store.sql import AuditEntry, PlanWrite, SqlStore
from dispatcher.template import TemplateSet
from dispatcher.template.context import Creditor, build_context

ACTOR = "system:planner"


@dataclass
class PlanReport:
    """What one plan run decided: counts by (stage, channel, outcome)."""

    now: datetime
    dry_run: bool
    accounts: int = 0
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def add(self, stage: str, channel: str, outcome: str) -> None:
        self.counts[(stage, channel, outcome)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def recipient_of(account: Account, channel: ChannelKind) -> str | None:
    if channel is ChannelKind.SMS:
        return account.phone
    if channel is ChannelKind.EMAIL:
        return account.email
    if account.address is None:
        return None
    return "\n".join([account.full_name, *account.address.lines()])


def _row(
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


_UPDATABLE = (
    "message_id",
    "status",
    "hold_reason",
    "rule_id",
    "hold_until",
    "dpd",
    "locale",
    "recipient",
    "template_id",
    "template_version",
    "template_sha256",
    "subject",
    "body",
    "body_html",
    "body_sha256",
    "scheduled_for",
    "updated_at",
)


class Planner:
    def __init__(
        self,
        store: SqlStore,
        templates: TemplateSet,
        strategy: Strategy,
        creditor: Creditor,
        *,
        batch_size: int = 2000,
    ) -> None:
        self.store = store
        self.templates = templates
        self.strategy = strategy
        self.creditor = creditor
        self.batch_size = batch_size

    def horizon(self, now: datetime) -> datetime:
        """Latest due date that can be in a stage at ``now``: earliest stage plus a zone day."""
        return now + timedelta(days=max(0, -self.strategy.earliest_dpd) + 1)

    def count(self, now: datetime) -> int:
        return self.store.count_plannable(self.horizon(now).date())

    def plan(
        self,
        now: datetime,
        *,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> PlanReport:
        """Plan every account at ``now``; with ``dry_run`` decide and render but write nothing."""
        report = PlanReport(now=now, dry_run=dry_run)
        for batch in self.store.plannable_batches(self.horizon(now).date(), self.batch_size):
            existing = self.store.existing_messages([a.account_id for a in batch])
            write = PlanWrite()
            for account in batch:
                for decision in plan_account(
                    account, now, self.strategy, existing.get(account.account_id, ())
                ):
                    self._apply(account, decision, now, write, report)
            if not dry_run:
                self.store.apply_plan(write)
            report.accounts += len(batch)
            if on_progress is not None:
                on_progress(len(batch))
        return report

    def _apply(
        self,
        account: Account,
        decision: Queue | HoldBack | End,
        now: datetime,
        write: PlanWrite,
        report: PlanReport,
    ) -> None:
        key = decision.key
        audit = _Audit(write, account.account_id, key.message_id, now)
        if isinstance(decision, End):
            report.add(key.stage, key.channel, decision.reason.value)
            detail = {"reason": decision.reason.value, "superseded_by": decision.superseded_by}
            superseded = decision.reason is EndReason.SUPERSEDED
            status = MessageStatus.SKIPPED if superseded else MessageStatus.EXPIRED
            if decision.existing:
                write.ends.append(
                    {
                        "message_id": key.message_id,
                        "status": status.value,
                        "hold_reason": decision.reason.value,
                        "updated_at": now,
                    }
                )
            else:
                write.inserts.append(_row(key, status, 0, now, hold_reason=decision.reason.value))
            audit(f"message_{status.value}", detail)
            return

        if isinstance(decision, HoldBack):
            self._hold(
                account,
                decision.key,
                decision.dpd,
                now,
                write,
                report,
                decision.update,
                decision.hold.reason,
                decision.hold.rule_id,
                decision.hold.until,
            )
            return

        locale = self._locale(account, decision)
        if locale is None:
            self._hold(
                account,
                key,
                decision.dpd,
                now,
                write,
                report,
                decision.release,
                HoldReason.TEMPLATE_MISSING,
                None,
                None,
                error=f"no {key.channel.value} template {decision.step.template!r} "
                f"for {account.locale} or {self.strategy.default_locale}",
            )
            return
        context = build_context(
            account, dpd=decision.dpd, stage_id=decision.stage.id, creditor=self.creditor, now=now
        )
        try:
            rendered = self.templates.render(key.channel, decision.step.template, locale, context)
        except TemplateError as exc:
            self._hold(
                account,
                key,
                decision.dpd,
                now,
                write,
                report,
                decision.release,
                HoldReason.RENDER_FAILED,
                None,
                None,
                error=str(exc),
            )
            return
        row = _row(
            key,
            MessageStatus.QUEUED,
            decision.dpd,
            now,
            locale=locale,
            recipient=recipient_of(account, key.channel),
            template_id=rendered.template_id,
            template_version=rendered.template_version,
            template_sha256=rendered.template_sha256,
            subject=rendered.subject,
            body=rendered.body,
            body_html=rendered.body_html,
            body_sha256=rendered.body_sha256,
            scheduled_for=now,
        )
        if decision.release:
            write.updates.append({name: row[name] for name in _UPDATABLE})
            audit("hold_released", {})
        else:
            write.inserts.append(row)
        report.add(key.stage, key.channel, "queued")
        audit(
            "message_queued",
            {
                "stage": key.stage,
                "step": key.step,
                "channel": key.channel.value,
                "dpd": decision.dpd,
                "template_id": rendered.template_id,
                "template_version": rendered.template_version,
                "template_sha256": rendered.template_sha256,
                "body_sha256": rendered.body_sha256,
            },
        )

    def _hold(
        self,
        account: Account,
        key: MessageKey,
        dpd: int,
        now: datetime,
        write: PlanWrite,
        report: PlanReport,
        update: bool,
        reason: HoldReason,
        rule_id: str | None,
        until: datetime | None,
        error: str | None = None,
    ) -> None:
        row = _row(
            key,
            MessageStatus.HELD,
            dpd,
            now,
            hold_reason=reason.value,
            rule_id=rule_id,
            hold_until=until,
        )
        if update:
            write.updates.append({name: row[name] for name in _UPDATABLE})
        else:
            write.inserts.append(row)
        report.add(key.stage, key.channel, f"held:{reason.value}")
        detail: dict[str, object] = {
            "reason": reason.value,
            "rule_id": rule_id,
            "until": until.isoformat() if until else None,
            "dpd": dpd,
        }
        if error:
            detail["error"] = error
        _Audit(write, account.account_id, key.message_id, now)("message_held", detail)

    def _locale(self, account: Account, decision: Queue) -> str | None:
        """The account's own locale, else the strategy's default, if a template exists."""
        channel, name = decision.step.channel, decision.step.template
        for locale in (account.locale, self.strategy.default_locale):
            if self.templates.has(channel, name, locale):
                return locale
        return None


@dataclass(frozen=True, slots=True)
class _Audit:
    write: PlanWrite
    account_id: str
    message_id: str
    now: datetime

    def __call__(self, event: str, detail: Mapping[str, object]) -> None:
        self.write.audits.append(
            AuditEntry(
                event=event,
                actor=ACTOR,
                at=self.now,
                account_id=self.account_id,
                message_id=self.message_id,
                detail=detail,
            )
        )
