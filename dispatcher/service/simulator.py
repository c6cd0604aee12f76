"""``dispatcher simulate``: replay the calendar on a copy of the database.

Runs the real planner and sender every ``tick`` from ``start`` for ``days`` days, with
in-memory channels, then reads back what went out and what was held. The same engine
backs the property tests that prove no simulated message ever breaks a rule.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from dispatcher.bootstrap import App
from dispatcher.store.sql import MESSAGE


@dataclass(frozen=True)
class Sent:
    at: datetime
    account_id: str
    stage: str
    step: str
    channel: str
    hold_reason: str | None  # why it had waited, if it did


@dataclass
class Simulation:
    start: datetime
    end: datetime
    sent: list[Sent] = field(default_factory=list)
    # (stage, channel, outcome) over every message touched in the period
    totals: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    held: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def timeline(self) -> dict[str, dict[str, list[Sent]]]:
        """account → local-free UTC day → messages sent that day."""
        days: dict[str, dict[str, list[Sent]]] = defaultdict(lambda: defaultdict(list))
        for s in sorted(self.sent, key=lambda s: (s.account_id, s.at)):
            days[s.account_id][s.at.date().isoformat()].append(s)
        return days


def simulate(
    app: App,
    start: datetime,
    days: int,
    tick: timedelta = timedelta(hours=1),
    on_tick: Callable[[datetime], None] | None = None,
    *,
    every: bool = False,
) -> Simulation:
    """Plan and send at every tick in [start, start + days); report what happened.

    ``on_tick`` is told each simulated instant once it is done (progress for long runs,
    or changes made between ticks); ``every`` plans every account at every tick instead
    of those due for review (the same outcome, as tests/integration/test_review.py shows).
    """
    end = start + timedelta(days=days)
    before = _states(app)
    planner, sender = app.planner(start), app.sender()
    now = start
    while now < end:
        planner.plan(now, every=every)
        asyncio.run(sender.send(now))
        if on_tick is not None:
            on_tick(now)
        now += tick
    return _read_back(app, start, end, before)


def _states(app: App) -> dict[str, tuple[str, datetime]]:
    with app.store.engine.connect() as conn:
        return {
            message_id: (status, updated_at)
            for message_id, status, updated_at in conn.execute(
                select(MESSAGE.c.message_id, MESSAGE.c.status, MESSAGE.c.updated_at)
            )
        }


def _read_back(
    app: App, start: datetime, end: datetime, before: dict[str, tuple[str, datetime]]
) -> Simulation:
    """What the simulation did: the messages it created or changed, not older history."""
    result = Simulation(start=start, end=end)
    # The columns read below only: bodies (a letter's Typst source is ~4 KB) would make a
    # year's read-back the run's peak memory.
    columns = [
        MESSAGE.c[name]
        for name in (
            "message_id",
            "account_id",
            "stage",
            "step",
            "channel",
            "status",
            "hold_reason",
            "sent_at",
            "updated_at",
        )
    ]
    with app.store.engine.connect() as conn:
        rows = conn.execute(select(*columns)).mappings().all()
    for r in rows:
        if before.get(r["message_id"]) == (r["status"], r["updated_at"]):
            continue
        outcome = r["status"]
        if r["status"] in ("held", "expired", "skipped") and r["hold_reason"]:
            outcome = f"{r['status']}:{r['hold_reason']}"
            result.held[r["account_id"]].append(
                f"{r['stage']}/{r['step']} {r['channel']}: {outcome}"
            )
        result.totals[(r["stage"], r["channel"], outcome)] += 1
        if r["sent_at"] is not None and start <= r["sent_at"] < end:
            result.sent.append(
                Sent(
                    r["sent_at"],
                    r["account_id"],
                    r["stage"],
                    r["step"],
                    r["channel"],
                    r["hold_reason"],
                )
            )
    return result
