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

from dispatcher.bootstrap import bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.portfolio import write_portfolio
from dispatcher.service import audit_log
from dispatcher.service.importer import import_accounts
from dispatcher.service.simulator import simulate
from tests.conftest import settings_for
from tests.invariant import check_period

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
    ticks = [START + k * TICK for k in range(int(timedelta(days=DAYS) / TICK) + 1)]
    ticks = [t for t in ticks if t < START + timedelta(days=DAYS)]
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
