"""A plan drafted in worker processes, or in batches of any size, writes exactly what one
process writing one batch writes; an interrupted plan leaves whole batches, never part of one.

Real databases (SQLite file, PostgreSQL), a generated portfolio with persons that own
several accounts (so caps count across batch boundaries), real spawned worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from bench.portfolio import write_bench_portfolio
from dispatcher.bootstrap import App, bootstrap
from dispatcher.domain.audit_chain import verify
from dispatcher.error import DispatcherError
from dispatcher.service import plan_pool
from dispatcher.service.importer import import_accounts
from dispatcher.settings import PlanSettings
from dispatcher.store import sql
from dispatcher.store.sql import AUDIT, HOLD, MESSAGE
from tests.conftest import DATABASES, settings_for, sqlite_url

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
ACCOUNTS = 1200

Tables = dict[str, list[tuple[object, ...]]]


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's portfolio: every 50th account shares the previous one's phone and
    email, so one person's accounts fall on both sides of many batch boundaries."""
    path = tmp_path_factory.mktemp("portfolio") / "accounts.csv"
    write_bench_portfolio(path, ACCOUNTS)
    return path


@pytest.fixture(params=DATABASES)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """A maker of fresh databases (a URL each), all on one engine kind."""
    if request.param == "sqlite":
        names = iter(range(100))
        yield lambda: sqlite_url(_mkdir(tmp_path / f"db{next(names)}"))
        return
    server = request.getfixturevalue("postgres_server")
    with server.database() as first, server.database() as second:
        urls = iter([first, second])
        yield lambda: next(urls)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _app(tmp_path: Path, url: str, portfolio: Path, *, workers: int, batch_size: int) -> App:
    settings = settings_for(tmp_path, url).model_copy(
        update={"plan": PlanSettings(workers=workers, batch_size=batch_size)}
    )
    app = bootstrap(settings)
    app.store.create_schema()
    app.catalog.bootstrap(NOW - timedelta(days=30))  # a fixed instant: same audit rows
    report = import_accounts(
        app.store,
        portfolio,
        now=NOW - timedelta(days=1),
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0
    return app


def _tables(app: App) -> Tables:
    with app.store.engine.connect() as conn:
        return {
            "message": [tuple(r) for r in conn.execute(select(MESSAGE).order_by("message_id"))],
            "audit": [tuple(r) for r in conn.execute(select(AUDIT).order_by("id"))],
            "hold": [tuple(r) for r in conn.execute(select(HOLD).order_by("id"))],
        }


def _plan_twice(app: App) -> None:
    """A first plan, then one a day later (releases, ends, new steps, held ones kept)."""
    first = app.planner(NOW).plan(NOW)
    assert first.complete and first.total > ACCOUNTS  # the heavy case: everything new
    later = NOW + timedelta(days=1, hours=2)
    assert app.planner(later).plan(later).total > 0


def test_workers_and_batches_write_what_one_process_and_one_batch_write(
    databases: Callable[[], str], portfolio: Path, tmp_path: Path
) -> None:
    reference = _app(tmp_path, databases(), portfolio, workers=1, batch_size=ACCOUNTS)
    pooled = _app(tmp_path, databases(), portfolio, workers=2, batch_size=97)
    try:
        _plan_twice(reference)
        _plan_twice(pooled)
        expected, found = _tables(reference), _tables(pooled)
        assert len(expected["message"]) > 2 * ACCOUNTS
        assert len(found["message"]) == len(expected["message"])
        assert found == expected  # every row, every column, audit ids and order included
        # The audit chain over them: the same head, and it verifies.
        heads = [app.audit_chain.seal() for app in (reference, pooled)]
        assert heads[0] is not None and heads[0] == heads[1]
        walked = verify(pooled.audit_chain.chain())
        assert walked.intact and walked.sealed == len(found["audit"])
    finally:
        for app in (reference, pooled):
            app.store.engine.dispose()


@pytest.mark.parametrize("batch_size", [1, 299, 300, 301])
def test_batch_boundaries_change_nothing(batch_size: int, portfolio: Path, tmp_path: Path) -> None:
    """Serial plans of the first 300 accounts in batches of 1, 299, 300 and 301 agree with
    one batch of everything (caps of persons split over batches included)."""
    small = tmp_path / "small.csv"
    with portfolio.open(encoding="utf-8") as source, small.open("w", encoding="utf-8") as out:
        for i, line in enumerate(source):
            if i > 300:
                break
            out.write(line)
    reference = _app(_mkdir(tmp_path / "a"), sqlite_url(_mkdir(tmp_path / "ra")), small,
                     workers=1, batch_size=5000)  # fmt: skip
    split = _app(_mkdir(tmp_path / "b"), sqlite_url(_mkdir(tmp_path / "rb")), small,
                 workers=1, batch_size=batch_size)  # fmt: skip
    try:
        _plan_twice_small(reference)
        _plan_twice_small(split)
        assert _tables(split) == _tables(reference)
    finally:
        for app in (reference, split):
            app.store.engine.dispose()


def _plan_twice_small(app: App) -> None:
    assert app.planner(NOW).plan(NOW).total > 300
    later = NOW + timedelta(days=1, hours=2)
    app.planner(later).plan(later)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_plan_failing_midway_leaves_whole_batches_and_the_next_run_completes_it(
    workers: int, portfolio: Path, tmp_path: Path
) -> None:
    """The database refuses one audit record of the fourth batch (a trigger): that batch's
    outbox rows and records are all rolled back, the three before stay whole, none after
    is written; once the fault is gone the next plan writes what a clean plan writes."""
    clean = _app(_mkdir(tmp_path / "a"), sqlite_url(_mkdir(tmp_path / "ca")), portfolio,
                 workers=1, batch_size=200)  # fmt: skip
    faulty = _app(_mkdir(tmp_path / "b"), sqlite_url(_mkdir(tmp_path / "cb")), portfolio,
                  workers=workers, batch_size=200)  # fmt: skip
    try:
        batches = list(faulty.store.plannable_batches(faulty.planner(NOW).horizon(NOW).date(), 200))
        victim = batches[3][100].account_id
        with faulty.store.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit "
                    f"WHEN NEW.account_id = '{victim}' "
                    "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
                )
            )
        with pytest.raises(DBAPIError, match="disk says no"):
            faulty.planner(NOW).plan(NOW)
        with faulty.store.engine.connect() as conn:
            planned = set(conn.execute(text("SELECT DISTINCT account_id FROM message")).scalars())
            audited = set(
                conn.execute(
                    text("SELECT DISTINCT account_id FROM audit WHERE actor = 'system:planner'")
                ).scalars()
            )
        written = {a.account_id for batch in batches[:3] for a in batch}
        assert planned <= written and audited == planned
        assert len(planned) > 500  # the three whole batches (accounts with a decision)
        with faulty.store.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit"))
        clean.planner(NOW).plan(NOW)
        faulty.planner(NOW).plan(NOW)
        expected, found = _tables(clean), _tables(faulty)
        assert found["message"] == expected["message"]
        # The records are the same ones; their ids differ by the rolled-back batch's gap.
        assert [r[1:] for r in found["audit"]] == [r[1:] for r in expected["audit"]]
    finally:
        for app in (clean, faulty):
            app.store.engine.dispose()


def test_a_stopped_pooled_plan_commits_whole_batches_and_the_next_run_finishes(
    portfolio: Path, tmp_path: Path
) -> None:
    clean = _app(_mkdir(tmp_path / "a"), sqlite_url(_mkdir(tmp_path / "sa")), portfolio,
                 workers=1, batch_size=150)  # fmt: skip
    stopped = _app(_mkdir(tmp_path / "b"), sqlite_url(_mkdir(tmp_path / "sb")), portfolio,
                   workers=2, batch_size=150)  # fmt: skip
    try:
        asked = iter(range(1000))
        report = stopped.planner(NOW).plan(NOW, stop=lambda: next(asked) >= 3)
        assert not report.complete and report.accounts == 3 * 150
        rest = stopped.planner(NOW).plan(NOW)
        assert rest.complete
        clean.planner(NOW).plan(NOW)
        assert _tables(stopped) == _tables(clean)
    finally:
        for app in (clean, stopped):
            app.store.engine.dispose()


def test_the_sqlite_fast_insert_stores_what_sqlalchemy_core_stores(
    portfolio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's DBAPI executemany on SQLite (one compiled statement, the columns' own
    bind processors) against SQLAlchemy Core's executemany: the same bytes in every row."""
    fast = _app(_mkdir(tmp_path / "a"), sqlite_url(_mkdir(tmp_path / "fa")), portfolio,
                workers=1, batch_size=400)  # fmt: skip
    core = _app(_mkdir(tmp_path / "b"), sqlite_url(_mkdir(tmp_path / "fb")), portfolio,
                workers=1, batch_size=400)  # fmt: skip
    try:
        _plan_twice(fast)

        def through_core(conn: Connection, statement: Any, rows: Any) -> None:
            conn.execute(statement, rows)

        monkeypatch.setattr(sql, "_insert_many", through_core)
        _plan_twice(core)
        stored = []
        for app in (fast, core):
            with app.store.engine.connect() as conn:
                stored.append(
                    [
                        [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1")]
                        for t in ("message", "audit")
                    ]
                )
        assert stored[0] == stored[1]
        assert len(stored[0][0]) > 2 * ACCOUNTS
    finally:
        for app in (fast, core):
            app.store.engine.dispose()


def test_a_worker_that_cannot_start_stops_the_plan_clearly_and_writes_nothing(
    portfolio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose rebuilt templates do not hash as the planner's refuses to start (it
    would render other wording); the plan says so and writes no batch."""
    app = _app(tmp_path, sqlite_url(_mkdir(tmp_path / "w")), portfolio, workers=2, batch_size=300)
    real = plan_pool.template_sources
    monkeypatch.setattr(plan_pool, "template_sources", lambda t: (real(t)[0], {}))
    try:
        with pytest.raises(DispatcherError, match="worker process failed"):
            app.planner(NOW).plan(NOW)
        with app.store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM message")).scalar_one() == 0
            assert (
                conn.execute(
                    text("SELECT count(*) FROM audit WHERE actor = 'system:planner'")
                ).scalar_one()
                == 0
            )
    finally:
        app.store.engine.dispose()
