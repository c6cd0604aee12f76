"""The planner's pure heart: what to do for one account at ``now``.

Given the account, its existing messages and the strategy, :func:`plan_account` returns
one decision per (account, step) that needs one. It never reads the clock or the
database; the planner service feeds it and writes what it returns in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dispatcher.domain.account import Account
from dispatcher.domain.message import WENT_OUT, MessageKey, MessageStatus
from dispatcher.domain.policy import Hold, hold_for
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import Stage, Step, Strategy


class EndReason(StrEnum):
    """Why a pending message will never be sent (recorded, never silently dropped)."""

    STAGE_LEFT = "stage_left"
    NOT_COLLECTIBLE = "account_not_collectible"
    CYCLE_ENDED = "cycle_ended"
    SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class Existing:
    """What the store already holds for one key."""

    key: MessageKey
    status: MessageStatus
    hold_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Queue:
    """Render and queue this step now."""

    key: MessageKey
    stage: Stage
    step: Step
    dpd: int
    release: bool = False  # True when an existing held message is released
    held_for: str | None = None  # the reason it was held for, when released


@dataclass(frozen=True, slots=True)
class HoldBack:
    """Record (or update) a hold on this step; it is re-evaluated at every plan."""

    key: MessageKey
    stage: Stage
    step: Step
    dpd: int
    hold: Hold
    update: bool = False  # True when an existing held message changes reason


@dataclass(frozen=True, slots=True)
class End:
    """A step that will never be sent: a new skipped row, or a pending row ended."""

    key: MessageKey
    reason: EndReason
    existing: bool
    superseded_by: str | None = None


Decision = Queue | HoldBack | End


# Statuses of a step that is on its way or gone (``unknown`` may have gone): a later
# owed step on the same channel is superseded by it, not sent beside it.
_SUPERSEDING = (
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    *WENT_OUT,
    MessageStatus.UNKNOWN,
)


def plan_account(
    account: Account,
    now: datetime,
    strategy: Strategy,
    existing: Iterable[Existing],
) -> list[Decision]:
    """Decide every step of ``account`` that is due at ``now`` and every pending one.

    Rules (issue #2):
    - Catch-up: a step of the current stage whose day has passed and that has no record
      is still due, so an outage never skips a step.
    - A stage the account has left is not replayed: its pending messages end
      (``stage_left``), and its unrecorded steps are never created.
    - When several unrecorded or held steps on one channel are owed at once, only the
      latest goes; the earlier ones end as ``superseded`` so one catch-up never sends a
      burst of near-identical reminders.
    - A paid or closed account, or one that has started a new cycle, ends every pending
      message of the old state.
    - Each owed step passes :func:`hold_for` or is held with its reason.
    """
    rows = {row.key: row for row in existing}
    decisions: list[Decision] = []
    dpd = days_past_due(account.due_date, account.timezone, now)
    stage = strategy.stage_for(dpd) if account.collectible else None

    for row in rows.values():
        if not row.status.pending:
            continue
        if not account.collectible:
            decisions.append(End(row.key, EndReason.NOT_COLLECTIBLE, existing=True))
        elif row.key.cycle != account.cycle:
            decisions.append(End(row.key, EndReason.CYCLE_ENDED, existing=True))
        elif stage is None or row.key.stage != stage.id:
            decisions.append(End(row.key, EndReason.STAGE_LEFT, existing=True))
    if stage is None:
        return decisions

    owed: list[tuple[Step, MessageKey, Existing | None]] = []
    for step in stage.steps:
        if stage.step_dpd(step) > dpd:
            continue
        key = MessageKey(account.account_id, account.cycle, stage.id, step.id, step.channel)
        found = rows.get(key)
        if found is None or found.status is MessageStatus.HELD:
            owed.append((step, key, found))

    latest: dict[str, Step] = {}
    for step, _key, _row in owed:
        current = latest.get(step.channel)
        if current is None or step.day > current.day:
            latest[step.channel] = step
    # A step already queued or sent on the channel also supersedes older owed steps.
    for key, row in rows.items():
        if key.stage == stage.id and key.cycle == account.cycle and row.status in _SUPERSEDING:
            done = next((s for s in stage.steps if s.id == key.step), None)
            current = latest.get(key.channel)
            if done is not None and (current is None or done.day > current.day):
                latest[key.channel] = done

    for step, key, owed_row in owed:
        newest = latest[step.channel]
        if newest is not step and newest.day > step.day:
            decisions.append(
                End(
                    key,
                    EndReason.SUPERSEDED,
                    existing=owed_row is not None,
                    superseded_by=newest.id,
                )
            )
            continue
        hold = hold_for(account, step.channel, now)
        if hold is None:
            decisions.append(
                Queue(
                    key,
                    stage,
                    step,
                    dpd,
                    release=owed_row is not None,
                    held_for=owed_row.hold_reason if owed_row else None,
                )
            )
        elif owed_row is None or owed_row.hold_reason != hold.reason.value:
            decisions.append(HoldBack(key, stage, step, dpd, hold, update=owed_row is not None))
    return decisions


def next_review(account: Account, now: datetime, strategy: Strategy) -> datetime | None:
    """The first instant after ``now`` at which :func:`plan_account` can decide something
    new for ``account`` by the passage of time alone; None: never, unless it changes.

    Why: a plan that looks only at the accounts whose answer can have changed costs what
    changed, not the size of the portfolio (docs/PLANNING.md, "Reviews"). With the
    account, its holds and its messages as they are, the decisions of ``plan_account``
    depend on time only through
    - the days past due: the stage and its owed steps change only on the strategy's
      turning points (:attr:`Strategy.turning_points`), each starting at midnight of the
      account's own time zone, as :func:`days_past_due` counts;
    - its hold records: one starts or ends at a stated instant;
    - a promise to pay, which lifts at the start of the day after the promised date.
    Anything else (an import, a hold placed or lifted, a message held at send, another
    configuration) is a change of the data, and whoever makes it asks for a review.
    An answer earlier than needed costs one look; a later one would miss a step, so
    every bound here errs early. A cured account ends its pending messages at once and
    is asked nothing more.
    """
    if not account.collectible:
        return None
    zone = ZoneInfo(account.timezone)
    found: list[datetime] = []
    turning = strategy.next_turning_point(days_past_due(account.due_date, account.timezone, now))
    if turning is not None:
        found.append(_start_of_day(account.due_date + timedelta(days=turning), zone))
    for hold in account.holds:
        found.extend(t for t in (hold.starts_at, hold.ends_at) if t is not None and t > now)
    promise = account.promise_to_pay_until
    if promise is not None:
        lifts = _start_of_day(promise + timedelta(days=1), zone)
        if lifts > now:
            found.append(lifts)
    return min(found, default=None)


def _start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``zone``: midnight, or when a DST gap at midnight
    ends (zoneinfo reads a missing 00:00 with the offset before the gap, which is the
    instant the gap ends)."""
    return datetime.combine(day, time(0), tzinfo=zone)
