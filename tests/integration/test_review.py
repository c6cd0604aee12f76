"""Incremental planning: a plan looks at the accounts due for review, and that changes
nothing that is decided (docs/PLANNING.md, "Reviews").

- A re-plan looks only at accounts whose plan time can have changed, and the next one
  at the account whose turning point came.
- Every change that can alter a plan asks for a review: a hold placed or lifted (on a
  person: every account sharing the phone or email), an import (a new phone or email:
  both persons), a STOP, a message held at send, a hold's end; another configuration
  asks for all. A change made while a plan has the account in hand is not lost.
- Simulations with holds placed and lifted and accounts re-imported between ticks write
  exactly the same messages, holds and audit records planning incrementally as planning
  every account at every tick.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.decision import next_review
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError
from dispatcher.service.importer import import_accounts
from dispatcher.service.planner import Planner
from dispatcher.service.simulator import simulate
from dispatcher.store.sql import AUDIT, HOLD, MESSAGE
from tests.conftest import settings_for, write_csv
from tests.integration.test_simulation import _row, account_rows

NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def _spec(person: int, due_offset: int, **more: object) -> dict[str, object]:
    return {
        "person": person,
        "zone_pick": 0,
        "due_offset": due_offset,
        "flag": None,
        "promise_days": None,
        "currency": "USD",
        **more,
    }


def _import(app: App, tmp: Path, rows: list[dict[str, str]], now: datetime = NOW) -> None:
    report = import_accounts(
        app.store,
        write_csv(tmp / f"import-{now:%Y%m%d%H%M%S}-{len(rows)}.csv", rows),
        now=now,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0, report.first_rejects


def _due(app: App, planner: Planner, now: datetime) -> list[str]:
    """The accounts a plan at ``now`` would look at."""
    reviewing = planner.reviewing(now)
    pages = app.store.plannable_batches(planner.horizon(now).date(), 1000, reviewing)
    return sorted(a.account_id for page in pages for a in page)


# Persons 0 and 0 share a phone and an email (S-0, S-1); person 3 is alone (S-2).
ROWS = [_spec(0, 3), _spec(0, 40), _spec(3, 10)]


@pytest.fixture
def planned(app: App, tmp_path: Path) -> tuple[App, Planner, list[dict[str, str]]]:
    rows = [_row(i, spec, NOW) for i, spec in enumerate(ROWS)]
    _import(app, tmp_path, rows)
    planner = app.planner(NOW)
    assert planner.plan(NOW).accounts == 3
    return app, planner, rows


def test_a_replan_looks_only_at_accounts_whose_plan_can_have_changed(planned) -> None:  # type: ignore[no-untyped-def]
    app, planner, _ = planned
    later = NOW + timedelta(hours=1)
    assert planner.count(later) == 0
    assert planner.plan(later).accounts == 0
    # Looking at every account decides nothing new either.
    assert planner.plan(later, every=True).total == 0
    # S-0 is at DPD 3 of the early stage; its next turning point is DPD 7 (an SMS).
    account = app.store.account("S-0")
    assert account is not None
    review = next_review(account, NOW, planner.batches.strategy)
    assert review is not None
    assert _due(app, planner, review - timedelta(seconds=1)) == []
    assert _due(app, planner, review) == ["S-0"]
    report = planner.plan(review)
    assert report.accounts == 1
    assert (
        report.counts[("early", "sms", "queued")]
        + sum(
            n
            for (stage, channel, outcome), n in report.counts.items()
            if outcome.startswith("deferred")
        )
        == 1
    )


def test_each_change_asks_for_a_review(planned, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, planner, rows = planned
    store, at = app.store, NOW + timedelta(minutes=5)

    def changed(change) -> list[str]:  # type: ignore[no-untyped-def]
        change()
        due = _due(app, planner, at)
        planner.plan(at)
        assert _due(app, planner, at) == []
        return due

    def hold(account_id: str, scope: str, ends: datetime | None = None) -> int:
        return store.add_hold(
            account_id,
            "dispute",
            channel=None,
            scope=scope,
            starts_at=at,
            ends_at=ends,
            note="test",
            actor="tester",
            now=at,
        )

    ids: list[int] = []
    assert changed(lambda: ids.append(hold("S-2", "account"))) == ["S-2"]
    assert changed(lambda: store.lift_hold(ids[-1], note="done", actor="t", now=at)) == ["S-2"]
    # A person-scope hold reaches every account sharing the phone or email.
    assert changed(lambda: ids.append(hold("S-0", "person"))) == ["S-0", "S-1"]
    assert changed(lambda: store.lift_hold(ids[-1], note="done", actor="t", now=at)) == [
        "S-0",
        "S-1",
    ]
    # An import asks for its own accounts; a new email moves S-2 to person 0's email,
    # so both persons are looked at (a person-scope hold of either may now reach it).
    assert changed(lambda: _import(app, tmp_path, [rows[2]], at)) == ["S-2"]
    moved = {**rows[2], "email": rows[0]["email"]}
    assert changed(lambda: _import(app, tmp_path, [moved], at)) == ["S-0", "S-1", "S-2"]
    # A STOP by text holds every account with the phone, and so reaches their person
    # (S-2 shares person 0's email since the move).
    assert changed(
        lambda: store.hold_phone(
            rows[0]["phone"],
            "opted_out_sms",
            channel="sms",
            scope="account",
            note="STOP",
            source="inbound",
            actor="system:inbound",
            now=at,
        )
    ) == ["S-0", "S-1", "S-2"]
    # A timed hold that ended, closed by housekeeping (its person: S-2 shares an email).
    ids.append(hold("S-2", "account", ends=at + timedelta(minutes=1)))
    planner.plan(at)
    assert changed(lambda: store.expire_holds(at + timedelta(minutes=2))) == ["S-0", "S-1", "S-2"]


def test_a_message_held_at_send_asks_for_a_review(app: App, tmp_path: Path) -> None:
    """The sender holds a queued message when a hold came after the plan; the planner
    re-evaluates held messages, so it must look at the account again."""
    _import(app, tmp_path, [_row(0, _spec(3, 10), NOW)])
    planner = app.planner(NOW)
    planner.plan(NOW)
    queued = [m for m in app.store.messages_of("S-0") if m["status"] == "queued"]
    assert queued, "the account must have a queued message for this test"
    app.store.add_hold(
        "S-0",
        "dispute",
        channel=None,
        scope="account",
        starts_at=NOW,
        ends_at=None,
        note="test",
        actor="tester",
        now=NOW,
    )
    planner.plan(NOW)  # looks at it, and leaves the queued message to the sender
    assert _due(app, planner, NOW) == []
    send_at = max(m["scheduled_for"] for m in queued)
    report = asyncio.run(app.sender().send(send_at))
    assert report.total >= 1
    assert {m["status"] for m in app.store.messages_of("S-0")} >= {"held"}
    assert _due(app, planner, send_at) == ["S-0"]


def test_a_change_while_the_plan_has_the_account_in_hand_is_not_lost(planned) -> None:  # type: ignore[no-untyped-def]
    app, planner, _ = planned
    store, batches, at = app.store, planner.batches, NOW + timedelta(days=30)
    pages = list(store.plannable_pages(batches.horizon(at).date(), 100, planner.reviewing(at)))
    result = batches.plan_batch(store, pages[0], at, planner.reviewing(at))
    store.add_hold(
        "S-2",
        "dispute",
        channel=None,
        scope="account",
        starts_at=at,
        ends_at=None,
        note="came in meanwhile",
        actor="tester",
        now=at,
    )
    batches.write_batch(store, result, at, dry_run=False)
    assert "S-2" in _due(app, planner, at)


def test_another_configuration_puts_every_account_up_for_review(planned) -> None:  # type: ignore[no-untyped-def]
    app, planner, _ = planned
    later = NOW + timedelta(hours=1)
    assert planner.count(later) == 0
    ladder = planner.batches.strategy
    fewer = ladder.model_copy(update={"stages": ladder.stages[:-1]})
    other = Planner(app.store, planner.templates, fewer, app.creditor, app.timing)
    assert other.count(later) == 3
    # A dry run records no review.
    planner.plan(later, dry_run=True, every=True)
    assert other.count(later) == 3


# -- the same outcome ------------------------------------------------------------------
events = st.lists(
    st.tuples(
        st.integers(0, 40),  # after which tick
        st.sampled_from(["hold", "person_hold", "timed_hold", "lift", "paid", "move", "promise"]),
        st.integers(0, 5),  # which account (modulo how many there are)
    ),
    max_size=8,
)


def _tables(app: App, tmp: Path) -> dict[str, list[tuple[object, ...]]]:
    """The tables compared, the run's own directory left out of import records."""
    with app.store.engine.connect() as conn:
        return {
            "message": [tuple(r) for r in conn.execute(select(MESSAGE).order_by("message_id"))],
            "hold": [tuple(r) for r in conn.execute(select(HOLD).order_by("id"))],
            "audit": [
                (*r[:-1], r[-1].replace(str(tmp), "<tmp>"))
                for r in conn.execute(
                    select(
                        AUDIT.c.id,
                        AUDIT.c.at,
                        AUDIT.c.event,
                        AUDIT.c.actor,
                        AUDIT.c.account_id,
                        AUDIT.c.message_id,
                        AUDIT.c.detail,
                    ).order_by(AUDIT.c.id)
                )
            ],
        }


def _run(
    tmp: Path,
    rows: list[dict[str, str]],
    plan: list[tuple[int, str, int]],
    start: datetime,
    tick: timedelta,
    *,
    every: bool,
) -> dict[str, list[tuple[object, ...]]]:
    app = bootstrap(settings_for(tmp), channels={k: MemoryChannel() for k in ChannelKind})
    app.store.create_schema()
    app.catalog.bootstrap(start)
    _import(app, tmp, rows, start)
    ticks = iter(range(10**6))
    holds: list[int] = []

    def between(now: datetime) -> None:
        index = next(ticks)
        for _, kind, pick in (e for e in plan if e[0] == index):
            row = rows[pick % len(rows)]
            account_id = row["account_id"]
            if kind in ("hold", "person_hold", "timed_hold"):
                holds.append(
                    app.store.add_hold(
                        account_id,
                        "payment_plan",
                        channel=None,
                        scope="person" if kind == "person_hold" else "account",
                        starts_at=now + timedelta(hours=2),
                        ends_at=now + timedelta(days=4) if kind == "timed_hold" else None,
                        note="simulated",
                        actor="tester",
                        now=now,
                    )
                )
            elif kind == "lift" and holds:
                hold_id = holds.pop(0)
                with suppress(InputError):  # a timed hold may have ended already
                    app.store.lift_hold(hold_id, note="simulated", actor="tester", now=now)
            elif kind in ("paid", "move", "promise"):
                changed = dict(row)
                if kind == "paid":
                    changed["balance"] = "0.00"
                elif kind == "move":
                    changed["email"] = rows[(pick + 1) % len(rows)]["email"]
                else:
                    changed["promise_to_pay_until"] = (now + timedelta(days=3)).date().isoformat()
                _import(app, tmp, [changed], now)
        app.store.expire_holds(now)

    simulate(app, start, 20, tick, on_tick=between, every=every)
    tables = _tables(app, tmp)
    app.store.engine.dispose()
    return tables


@settings(max_examples=max(3, settings.default.max_examples // 10), deadline=None)
@given(
    specs=account_rows,
    plan=events,
    start_hours=st.integers(0, 365 * 24),
    tick_minutes=st.integers(180, 720),
)
def test_planning_by_review_writes_what_planning_everything_writes(
    tmp_path_factory,
    specs,
    plan,
    start_hours,
    tick_minutes,  # type: ignore[no-untyped-def]
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=start_hours)
    rows = [_row(i, spec, start) for i, spec in enumerate(specs)]
    tick = timedelta(minutes=tick_minutes)
    by_review = _run(tmp_path_factory.mktemp("review"), rows, plan, start, tick, every=False)
    everything = _run(tmp_path_factory.mktemp("every"), rows, plan, start, tick, every=True)
    assert by_review["hold"] == everything["hold"]
    assert by_review["message"] == everything["message"]
    assert by_review["audit"] == everything["audit"]
    assert by_review["message"], "the simulation must decide something"
