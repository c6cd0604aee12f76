"""``dispatcher explain``: why was (or wasn't) this customer contacted?

For one account at ``now``: its days past due and stage, and for every step of the
stage whose day has come, what happened or would happen, with the rule id and its source.
Read-only: it asks the same pure core and timing as the planner and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from dispatcher.domain import validity
from dispatcher.domain.account import Account
from dispatcher.domain.decision import End, HoldBack, Queue, plan_account
from dispatcher.domain.message import WENT_OUT, MessageKey, MessageStatus
from dispatcher.domain.policy import RULE_BY_REASON, HoldReason
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import Strategy
from dispatcher.error import InputError
from dispatcher.service.ledger import ContactLedger
from dispatcher.service.timing import ContactTiming
from dispatcher.store.sql import SqlStore
from dispatcher.zone import candidate_zones


@dataclass(frozen=True)
class StepStory:
    stage: str
    step: str
    channel: str
    due_dpd: int
    outcome: str  # a stored status, or what the planner would decide now
    reason: str | None = None
    rule_id: str | None = None
    source: str | None = None
    at: datetime | None = None  # when it went, or may go


@dataclass
class Explanation:
    account: Account
    now: datetime
    dpd: int
    stage: str | None
    zones: tuple[str, ...]
    packs: tuple[str, ...]
    steps: list[StepStory] = field(default_factory=list)


def explain(
    store: SqlStore, strategy: Strategy, timing: ContactTiming, account_id: str, now: datetime
) -> Explanation:
    """The story of every due step of the account's current stage at ``now``."""
    account = store.account(account_id)
    if account is None:
        raise InputError(f"no account {account_id!r}")
    dpd = days_past_due(account.due_date, account.timezone, now)
    stage = strategy.stage_for(dpd) if account.collectible else None
    story = Explanation(
        account=account,
        now=now,
        dpd=dpd,
        stage=stage.id if stage else None,
        zones=candidate_zones(account),
        packs=tuple(p.id for p in timing.book.chain(account.jurisdiction)),
    )
    if stage is None:
        return story
    existing = store.existing_messages([account_id]).get(account_id, [])
    decisions = {d.key: d for d in plan_account(account, now, strategy, existing)}
    rows = {r["message_id"]: r for r in store.messages_of(account_id)}
    # `unknown` may have reached the person: it counts, the safe side of a cap.
    counted = (*WENT_OUT, MessageStatus.SENDING, MessageStatus.QUEUED, MessageStatus.UNKNOWN)
    ledger = ContactLedger(store.contacts([account], now - timing.lookback, counted))
    for step in stage.steps:
        due = stage.step_dpd(step)
        if due > dpd:
            continue
        key = MessageKey(account_id, account.cycle, stage.id, step.id, step.channel)
        decision = decisions.get(key)
        base = partial(StepStory, stage.id, step.id, step.channel.value, due)
        if isinstance(decision, HoldBack):
            rule = RULE_BY_REASON[decision.hold.reason]
            story.steps.append(
                base(
                    outcome="would hold",
                    reason=decision.hold.reason.value,
                    rule_id=rule.id,
                    source=rule.source,
                    at=decision.hold.until,
                )
            )
        elif isinstance(decision, End):
            story.steps.append(base(outcome="would end", reason=decision.reason.value))
        elif isinstance(decision, Queue):
            verdict = timing.verdict(
                account, step.channel, now, ledger.of(account, excluding=key.message_id)
            )
            if verdict.allowed:
                story.steps.append(base(outcome="would queue now", at=now))
            else:
                rule_id = verdict.rule_id
                reason = verdict.reason or ""
                if verdict.next_allowed is None:
                    no_window = RULE_BY_REASON[HoldReason.NO_CONTACT_WINDOW]
                    reason, rule_id = no_window.reason.value, no_window.id
                story.steps.append(
                    base(
                        outcome="would defer" if verdict.next_allowed else "would hold",
                        reason=reason,
                        rule_id=rule_id,
                        source=_source(timing, rule_id),
                        at=verdict.next_allowed,
                    )
                )
        else:
            row = rows.get(key.message_id)
            if row is None:
                continue
            status = row["status"]
            story.steps.append(
                base(
                    outcome=status,
                    reason=row["hold_reason"],
                    rule_id=row["rule_id"],
                    source=_source(timing, row["rule_id"]),
                    at=row["sent_at"] or row["hold_until"] or row["scheduled_for"],
                )
            )
    return story


def _source(timing: ContactTiming, rule_id: str | None) -> str | None:
    if rule_id is None:
        return None
    for rule in RULE_BY_REASON.values():
        if rule.id == rule_id:
            return rule.source
    if rule_id == validity.RULE_ID:
        return validity.RULE_SOURCE
    return timing.book.rule_source(rule_id)


def rule_source(timing: ContactTiming, rule_id: str | None) -> str | None:
    """The statute or house rule a recorded rule id comes from (None when unknown)."""
    return _source(timing, rule_id)
