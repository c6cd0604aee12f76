"""Rule AUDIT.chain on real databases: records sealed by the store, then edited, deleted
and reordered directly in SQL, as someone with database access would; verify names the
record. Concurrent sealers beside writers never fork the chain."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from dispatcher.bootstrap import App
from dispatcher.domain.audit_chain import Break
from dispatcher.service import audit_log
from dispatcher.store.sql import AuditEntry

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def write(app: App, n: int, start: int = 0) -> None:
    app.store.audit(
        AuditEntry(
            event="message_sent",
            actor="system:sender",
            at=T0 + timedelta(seconds=start + i),
            account_id=f"A-{(start + i) % 7}",
            message_id=f"m{start + i}",
            detail={"attempt": 1, "to": "+16175550100", "n": start + i},
        )
        for i in range(n)
    )


def ids(app: App) -> list[int]:
    with app.store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT id FROM audit ORDER BY seq"))]


def existing(app: App) -> int:
    """Records already there (the app fixture's catalog bootstrap writes some)."""
    with app.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit")).scalar_one())


def sql(app: App, statement: str, **params: object) -> None:
    with app.store.engine.begin() as conn:
        conn.execute(text(statement), params)


def anchors(app: App, tmp_path: Path) -> audit_log.AnchorFile:
    return audit_log.AnchorFile(tmp_path / "anchors.jsonl")


def test_sealing_chains_every_record_and_is_idempotent(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 120)
    file = anchors(app, tmp_path)

    first = audit_log.seal(app.audit_chain, file, anchor=True)
    again = audit_log.seal(app.audit_chain, file, anchor=True)

    assert first.head is not None and first.head.seq == base + 120 and first.anchored
    assert again.head == first.head and not again.anchored  # the head did not move
    found = audit_log.check(app.audit_chain, file)
    assert found.verdict.intact and found.verdict.sealed == base + 120
    assert (found.unsealed, found.anchors) == (0, 1)


def test_sealing_in_small_batches_continues_the_same_chain(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 25)
    head = app.audit_chain.seal(batch=7)
    write(app, 5, start=25)

    assert head is not None and head.seq == base + 25
    assert app.audit_chain.seal(batch=3) is not None
    assert audit_log.check(app.audit_chain, anchors(app, tmp_path)).verdict.sealed == base + 30


def test_an_edit_in_sql_is_named(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 10)
    app.audit_chain.seal()
    victim = ids(app)[base + 6]

    sql(app, "UPDATE audit SET detail = '{\"attempt\": 0}' WHERE id = :id", id=victim)

    verdict = audit_log.check(app.audit_chain, anchors(app, tmp_path)).verdict
    assert verdict.broken is Break.CHANGED
    assert (verdict.record_id, verdict.at_seq) == (victim, base + 7)


def test_a_deletion_in_sql_is_named(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 10)
    app.audit_chain.seal()
    victim, after = ids(app)[base + 3], ids(app)[base + 4]

    sql(app, "DELETE FROM audit WHERE id = :id", id=victim)

    verdict = audit_log.check(app.audit_chain, anchors(app, tmp_path)).verdict
    assert verdict.broken is Break.MISSING
    assert (verdict.at_seq, verdict.record_id) == (base + 4, after)


def test_a_reorder_in_sql_is_named(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 10)
    app.audit_chain.seal()
    a, b = ids(app)[base + 2], ids(app)[base + 5]

    # Swap two records' places (seq and seal together), through a free seq value.
    sql(app, "UPDATE audit SET seq = -1 WHERE id = :id", id=a)
    sql(app, "UPDATE audit SET seq = :seq WHERE id = :id", id=b, seq=base + 3)
    sql(app, "UPDATE audit SET seq = :seq WHERE id = :id", id=a, seq=base + 6)

    verdict = audit_log.check(app.audit_chain, anchors(app, tmp_path)).verdict
    assert verdict.broken is Break.REORDERED
    assert (verdict.at_seq, verdict.record_id) == (base + 3, b)


def test_deleting_the_newest_records_is_caught_by_the_anchor(app: App, tmp_path: Path) -> None:
    base = existing(app)
    write(app, 10)
    file = anchors(app, tmp_path)
    audit_log.seal(app.audit_chain, file, anchor=True)
    newest = ids(app)[-3:]

    sql(app, f"DELETE FROM audit WHERE id IN ({', '.join(map(str, newest))})")

    verdict = audit_log.check(app.audit_chain, file).verdict
    assert verdict.broken is Break.TRUNCATED
    assert verdict.at_seq == base + 8 and f"ends at seq {base + 7}" in verdict.explanation


def test_records_written_after_the_last_seal_are_reported_not_failed(
    app: App, tmp_path: Path
) -> None:
    base = existing(app)
    write(app, 4)
    app.audit_chain.seal()
    write(app, 3, start=4)

    found = audit_log.check(app.audit_chain, anchors(app, tmp_path))

    assert found.verdict.intact and (found.verdict.sealed, found.unsealed) == (base + 4, 3)


def test_concurrent_sealers_beside_writers_never_fork_the_chain(app: App, tmp_path: Path) -> None:
    base = existing(app)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(start: int) -> None:
        try:
            for k in range(20):
                write(app, 5, start=start + 5 * k)
        except BaseException as exc:
            errors.append(exc)

    def sealer() -> None:
        try:
            while not stop.is_set():
                app.audit_chain.seal(batch=13)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(1000 * w,)) for w in range(3)]
    sealers = [threading.Thread(target=sealer) for _ in range(3)]
    for thread in writers + sealers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in sealers:
        thread.join()
    app.audit_chain.seal()

    assert not errors
    found = audit_log.check(app.audit_chain, anchors(app, tmp_path))
    assert found.verdict.intact
    assert (found.verdict.sealed, found.unsealed) == (base + 300, 0)
