"""An independent checker of a simulated period: reads the database and the audit log
after the fact and proves the rules held, without the planner's or sender's code.

It knows the rules only as data (the strategy's ladder, the policy packs' windows,
holidays and caps, the hold records and import flags) and checks them with its own
arithmetic:

- DUE.decided: every step the ladder owed an account at some plan tick has exactly one
  record, that went out, or is held / skipped / expired / failed with a reason, or is
  still queued for an instant after the last tick (deferred, with its reason);
- STAGE.timing: nothing went out before its step's day or after its stage was left;
- windows (per pack rule id): every message that went out was inside the channel's
  window in every zone the customer may be in;
- holidays (per rule id): none went out on a holiday of a calendar covering its channel;
- caps (per rule id): in no rolling window did a person (accounts sharing a phone or an
  email) get more than the cap allows;
- holds: none went out while a blocking flag, a channel opt-out, a promise to pay or an
  active hold record covered it;
- AUDIT.one_record: every message that went out has exactly one ``message_sent`` (or
  ``message_handed_to_print``) record, at its sent time; every held one a ``message_held``.

Used by tests/integration/test_simulated_year.py and ``./dev bench year``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dispatcher.bootstrap import App
from dispatcher.domain.account import Account, Flag
from dispatcher.domain.strategy import ChannelKind, Stage
from dispatcher.holiday import is_holiday
from dispatcher.store.sql import AUDIT, HOLD, MESSAGE
from dispatcher.zone import candidate_zones

WENT_OUT = {"sent", "handed_to_print", "delivered"}
ENDED = {"held", "skipped", "expired", "failed", "cancelled", "unknown"}
BLOCKING = {
    Flag.DECEASED,
    Flag.BANKRUPTCY,
    Flag.CEASE_AND_DESIST,
    Flag.DO_NOT_CONTACT,
    Flag.DISPUTE,
}
OPT_OUT = {ChannelKind.SMS: Flag.OPT_OUT_SMS, ChannelKind.EMAIL: Flag.OPT_OUT_EMAIL}


@dataclass
class Findings:
    """What was checked (per rule id, how many times) and what was broken."""

    checked: Counter[str] = field(default_factory=Counter)
    broken: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[str] = field(default_factory=Counter)

    def check(self, rule: str, ok: bool, problem: str) -> None:
        self.checked[rule] += 1
        if not ok:
            self.broken[rule].append(problem)

    @property
    def problems(self) -> list[str]:
        return [f"{rule}: {p}" for rule, ps in sorted(self.broken.items()) for p in ps]

    def summary(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "rules": {
                rule: {"checked": n, "broken": len(self.broken.get(rule, []))}
                for rule, n in sorted(self.checked.items())
            },
        }


def _local(at: datetime, zone: str) -> datetime:
    return at.astimezone(ZoneInfo(zone))


def _dpd(account: Account, at: datetime) -> int:
    return (_local(at, account.timezone).date() - account.due_date).days


def _stage_of(stages: Sequence[Stage], dpd: int) -> Stage | None:
    for stage in stages:
        if stage.dpd_from <= dpd and (stage.dpd_to is None or dpd <= stage.dpd_to):
            return stage
    return None


def ticks_of(start: datetime, days: int, tick: timedelta) -> list[datetime]:
    """The instants ``simulate(app, start, days, tick)`` planned and sent at."""
    end = start + timedelta(days=days)
    return [
        start + k * tick for k in range(int((end - start) / tick) + 1) if start + k * tick < end
    ]


def check_period(app: App, ticks: Sequence[datetime], accounts: Iterable[str]) -> Findings:
    """Check everything the simulation at ``ticks`` (plan-then-send instants) did to
    ``accounts``; the database is read as it is after the last tick."""
    found = Findings()
    ids = list(accounts)
    book = app.policies
    stages = app.strategy.stages
    first, last = ticks[0], ticks[-1]
    with app.store.engine.connect() as conn:
        messages = [dict(r) for r in conn.execute(select(MESSAGE)).mappings()]
        holds = [dict(r) for r in conn.execute(select(HOLD)).mappings()]
        audit: Counter[tuple[str, str]] = Counter()
        audit_at: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        for message_id, event, at in conn.execute(
            select(AUDIT.c.message_id, AUDIT.c.event, AUDIT.c.at).where(
                AUDIT.c.message_id.is_not(None)
            )
        ):
            audit[(message_id, event)] += 1
            audit_at[(message_id, event)].append(at)
    by_id = app.store.accounts(ids)
    rows: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        rows[(m["account_id"], m["stage"], m["step"], m["channel"])].append(m)
        found.outcomes[m["status"]] += 1

    # DUE.decided: what the ladder owed, by the checker's own staging arithmetic: at
    # some tick the account was in the stage, on or past the step's day.
    owed: dict[tuple[str, str, str, str], int] = {}
    for account in by_id.values():
        if not account.collectible:
            continue
        for dpd in range(_dpd(account, first), _dpd(account, last) + 1):
            stage = _stage_of(stages, dpd)
            for step in stage.steps if stage is not None else ():
                if stage is not None and stage.dpd_from + step.day - 1 <= dpd:
                    key = (account.account_id, stage.id, step.id, step.channel.value)
                    owed.setdefault(key, dpd)
    for key, dpd in owed.items():
        records = rows.get(key, [])
        what = f"{'/'.join(key)} (owed at dpd {dpd})"
        found.check(
            "DUE.decided",
            len(records) == 1 and _explained(records[0], last),
            f"{what}: {[_show(r) for r in records] or 'no record'}",
        )
    went = [m for m in messages if m["status"] in WENT_OUT and m["sent_at"] is not None]
    _check_timing(found, went, by_id, stages)
    _check_windows(found, went, by_id, book)
    _check_caps(found, went, by_id, book)
    _check_holds(found, went, by_id, holds)
    for m in messages:
        mid = m["message_id"]
        if m["status"] in WENT_OUT:
            events = audit[(mid, "message_sent")] + audit[(mid, "message_handed_to_print")]
            stamps = audit_at[(mid, "message_sent")] + audit_at[(mid, "message_handed_to_print")]
            found.check(
                "AUDIT.one_record",
                events == 1 and (m["sent_at"] is None or m["sent_at"] in stamps),
                f"{mid} {m['status']}: {events} sent records at {stamps}, sent_at {m['sent_at']}",
            )
        elif m["status"] == "held":
            found.check(
                "AUDIT.one_record", audit[(mid, "message_held")] >= 1, f"{mid}: no held record"
            )
    return found


def _explained(r: dict[str, Any], last: datetime) -> bool:
    status = r["status"]
    if status in WENT_OUT:
        return True
    if status in ENDED:
        return bool(r["hold_reason"] or r["last_error"])
    if status == "queued":
        waits_until = (
            max(t for t in (r["scheduled_for"], r["next_attempt_at"]) if t)
            if (r["scheduled_for"] or r["next_attempt_at"])
            else None
        )
        return waits_until is not None and waits_until > last
    return False


def _show(r: dict[str, Any]) -> str:
    return (
        f"{r['status']} reason={r['hold_reason']} scheduled_for={r['scheduled_for']} "
        f"error={r['last_error']}"
    )


def _what(m: dict[str, Any]) -> str:
    at = m["sent_at"]
    return f"{m['account_id']} {m['stage']}/{m['step']} {m['channel']} at {at:%Y-%m-%d %H:%M}Z"


def _check_timing(
    found: Findings, went: list[dict[str, Any]], by_id: dict[str, Account], stages: Sequence[Stage]
) -> None:
    stage_by_id = {s.id: s for s in stages}
    for m in went:
        account = by_id[m["account_id"]]
        stage = stage_by_id[m["stage"]]
        [step] = [s for s in stage.steps if s.id == m["step"] and s.channel.value == m["channel"]]
        dpd = _dpd(account, m["sent_at"])
        in_stage = dpd <= stage.dpd_to if stage.dpd_to is not None else True
        found.check(
            "STAGE.timing",
            stage.dpd_from + step.day - 1 <= dpd and in_stage,
            f"{_what(m)}: at dpd {dpd}",
        )


def _check_windows(
    found: Findings, went: list[dict[str, Any]], by_id: dict[str, Account], book: Any
) -> None:
    for m in went:
        account = by_id[m["account_id"]]
        channel = ChannelKind(m["channel"])
        for zone in candidate_zones(account):
            local = _local(m["sent_at"], zone)
            for pack in book.chain(account.jurisdiction):
                windows = pack.windows_for(channel)
                if windows:
                    found.check(
                        windows[0].id,
                        any(w.contains(local) for w in windows),
                        f"{_what(m)}: {local:%a %H:%M} in {zone}",
                    )
                for rule in pack.holidays:
                    calendar = account.country if rule.calendar == "account" else rule.calendar
                    if channel in rule.channels and calendar:
                        found.check(
                            rule.id,
                            not is_holiday(calendar, account.region, local.date()),
                            f"{_what(m)}: {local.date()} is a holiday in {zone}",
                        )


def _check_caps(
    found: Findings, went: list[dict[str, Any]], by_id: dict[str, Account], book: Any
) -> None:
    by_phone: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in went:
        a = by_id[m["account_id"]]
        by_account[a.account_id].append(m)
        if a.phone:
            by_phone[a.phone].append(m)
        if a.email:
            by_email[a.email].append(m)
    for m in went:
        account = by_id[m["account_id"]]
        channel = ChannelKind(m["channel"])
        person = {id(x): x for x in by_account[account.account_id]}
        if account.phone:
            person.update((id(x), x) for x in by_phone[account.phone])
        if account.email:
            person.update((id(x), x) for x in by_email[account.email])
        for pack in book.chain(account.jurisdiction):
            for cap in pack.caps:
                if channel not in cap.channels:
                    continue
                pool = (
                    person.values()
                    if cap.scope.value == "person"
                    else by_account[account.account_id]
                )
                inside = [
                    x
                    for x in pool
                    if ChannelKind(x["channel"]) in cap.channels
                    and m["sent_at"] - cap.window < x["sent_at"] <= m["sent_at"]
                ]
                found.check(
                    cap.id,
                    len(inside) <= cap.limit,
                    f"{_what(m)}: {len(inside)} within {cap.window} (limit {cap.limit})",
                )


def _check_holds(
    found: Findings,
    went: list[dict[str, Any]],
    by_id: dict[str, Account],
    holds: list[dict[str, Any]],
) -> None:
    of_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    of_phone: dict[str, list[dict[str, Any]]] = defaultdict(list)
    of_email: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for h in holds:
        of_account[h["account_id"]].append(h)
        if h["scope"] == "person" and h["account_id"] in by_id:
            holder = by_id[h["account_id"]]
            if holder.phone:
                of_phone[holder.phone].append(h)
            if holder.email:
                of_email[holder.email].append(h)
    for m in went:
        account = by_id[m["account_id"]]
        channel = ChannelKind(m["channel"])
        at: datetime = m["sent_at"]
        blocking = account.flags & BLOCKING
        found.check("HOLD.flags", not blocking, f"{_what(m)}: despite {sorted(blocking)}")
        flag = OPT_OUT.get(channel)
        found.check(
            "HOLD.opt_out", flag is None or flag not in account.flags, f"{_what(m)}: opted out"
        )
        promise: date | None = account.promise_to_pay_until
        found.check(
            "HOLD.promise_to_pay",
            promise is None or _local(at, account.timezone).date() > promise,
            f"{_what(m)}: promise to pay until {promise}",
        )
        reaching = list(of_account[account.account_id])
        if account.phone:
            reaching += of_phone[account.phone]
        if account.email:
            reaching += of_email[account.email]
        for h in {h["id"]: h for h in reaching}.values():
            active = (
                h["starts_at"] <= at
                and (h["ends_at"] is None or at < h["ends_at"])
                and (h["lifted_at"] is None or at < h["lifted_at"])
                and h["channel"] in (None, channel.value)
            )
            found.check(
                "HOLD.records", not active, f"{_what(m)}: during hold {h['id']} ({h['reason']})"
            )
