"""A simulated year: the real planner and sender over 365 days on a synthetic portfolio
(the bench generator's mix of stages, countries, zones, holds and shared phones), then
the independent checker (tests/invariant.py) reads the database and the audit log:
every due step was sent or held with a reason, and no window, holiday, cap or hold was
ever broken. ``./dev bench year`` runs the same at scale.

The tick (plan then send) is 13 hours, so over the year the runs fall at every hour of
the day in every zone, windows opening and closing between them included.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update

from dispatcher.bootstrap import bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.portfolio import write_portfolio
from dispatcher.service import audit_log
from dispatcher.service.importer import import_accounts
from dispatcher.service.simulator import simulate
from dispatcher.store.sql import AUDIT, HOLD, MESSAGE
from tests.conftest import settings_for, write_csv
from tests.integration.test_pipeline import row
from tests.invariant import check_period, ticks_of

START = datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
DAYS = 365
TICK = timedelta(hours=13)
ACCOUNTS = 600


def test_a_simulated_year_breaks_no_rule_and_decides_every_due_step(tmp_path: Path) -> None:
    channels = {kind: MemoryChannel() for kind in ChannelKind}
    app = bootstrap(settings_for(tmp_path), channels=channels)
    app.store.create_schema()
    portfolio = tmp_path / "portfolio.csv"
    write_portfolio(portfolio, ACCOUNTS, today=date(2026, 1, 1), seed=2026)
    imported = import_accounts(
        app.store,
        portfolio,
        now=START,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert imported.rejected == 0, imported.first_rejects

    result = simulate(app, START, DAYS, TICK)
    ticks = ticks_of(START, DAYS, TICK)
    ids = [f"AC{n:08d}" for n in range(1, ACCOUNTS + 1)]
    found = check_period(app, ticks, ids)

    assert found.problems == []
    # It cannot pass by checking nothing: the year owed and sent a lot, on every channel,
    # held some, and every rule family was exercised.
    assert found.checked["DUE.decided"] > 3 * ACCOUNTS
    assert found.outcomes["sent"] > 2 * ACCOUNTS
    assert found.outcomes["held"] > 0 and found.outcomes["skipped"] + found.outcomes["expired"] > 0
    assert {s.channel for s in result.sent} == {"sms", "email", "letter"}
    for family in ("HOLD.flags", "HOLD.records", "STAGE.timing", "AUDIT.one_record"):
        assert found.checked[family] > 0, family
    assert any(rule.startswith("US.") for rule in found.checked), found.checked
    assert sum(n for rule, n in found.checked.items() if "cap" in rule.lower()) > 0
    # Nothing went to a channel twice.
    for kind, channel in channels.items():
        ids_sent = Counter(m.message_id for m in channel.delivered)
        assert [m for m, k in ids_sent.items() if k > 1] == [], kind
    # The year's audit records chain and verify.
    audit_log.seal(app.audit_chain, app.anchors, anchor=True)
    assert audit_log.check(app.audit_chain, app.anchors).verdict.intact


def test_the_checker_finds_each_kind_of_break(tmp_path: Path) -> None:
    """The checker must fail when a rule is broken: a short simulation, then the database
    is edited behind the program's back, one break of each kind."""
    app = bootstrap(settings_for(tmp_path), channels={k: MemoryChannel() for k in ChannelKind})
    app.store.create_schema()
    start = datetime(2026, 3, 2, 5, 30, tzinfo=UTC)
    rows = [row(f"T-{i}", start.date() - timedelta(days=d)) for i, d in enumerate([-4, 0, 6, 29])]
    import_accounts(
        app.store,
        write_csv(tmp_path / "a.csv", rows),
        now=start,
        default_timezone="America/New_York",
        default_region="US",
    )
    tick = timedelta(hours=5)
    simulate(app, start, 40, tick)
    ticks = ticks_of(start, 40, tick)
    ids = [r["account_id"] for r in rows]
    assert check_period(app, ticks, ids).problems == []

    with app.store.engine.begin() as conn:
        sms = conn.execute(
            select(MESSAGE.c.message_id, MESSAGE.c.account_id, MESSAGE.c.sent_at)
            .where(MESSAGE.c.status == "sent", MESSAGE.c.channel == "sms")
            .order_by(MESSAGE.c.account_id, MESSAGE.c.sent_at)
        ).all()
        by_account: dict[str, list[Any]] = {}
        for m in sms:
            by_account.setdefault(m.account_id, []).append(m)
        twice = next(ms for ms in by_account.values() if len(ms) >= 2)
        first, second = twice[0], twice[1]
        # A cap: the second SMS an hour after the first. A window: one at 03:00 New York.
        moved = first.sent_at + timedelta(hours=1)
        conn.execute(
            update(MESSAGE).where(MESSAGE.c.message_id == second.message_id).values(sent_at=moved)
        )
        night = next(m for m in sms if m.account_id != first.account_id)
        at_night = datetime(2026, 3, 20, 7, 0, tzinfo=UTC)  # 03:00 EDT
        conn.execute(
            update(MESSAGE).where(MESSAGE.c.message_id == night.message_id).values(sent_at=at_night)
        )
        # A hold: a dispute on record from before the first SMS went.
        conn.execute(
            insert(HOLD).values(
                account_id=first.account_id,
                reason="dispute",
                channel=None,
                scope="account",
                starts_at=first.sent_at - timedelta(hours=1),
                source="test",
                created_by="test",
                created_at=first.sent_at - timedelta(hours=1),
            )
        )
        # A due step with no record at all.
        lost = conn.execute(
            select(MESSAGE.c.message_id).where(MESSAGE.c.status != "sent").limit(1)
        ).scalar_one()
        conn.execute(delete(AUDIT).where(AUDIT.c.message_id == lost))
        conn.execute(delete(MESSAGE).where(MESSAGE.c.message_id == lost))

    broken = check_period(app, ticks, ids).broken
    assert any(first.account_id in p for p in broken["US.cap.sms_day"])
    assert any("03:00" in p for p in broken["US.window.fdcpa"]), broken.keys()
    assert any("dispute" in p for p in broken["HOLD.records"])
    assert any("no record" in p for p in broken["DUE.decided"])
    assert broken["AUDIT.one_record"]  # the moved messages' sent records are at other times
