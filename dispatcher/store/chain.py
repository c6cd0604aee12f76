"""The audit chain in SQL: sealing new audit records and reading the chain back.

Writers (planner, sender, holds, ...) insert audit records unsealed and never wait on
each other. One sealer at a time (a transaction-scoped advisory lock on PostgreSQL; the
database lock on SQLite) chains them in id order after the current head. The unique index
on ``seq`` is the last line of defence: a second sealer that read the same head fails on
it and rolls back, so the chain can never fork.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from sqlalchemy import Engine, bindparam, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from dispatcher.domain.audit_chain import Anchor, ChainRecord, Seal, seal
from dispatcher.error import StoreError
from dispatcher.store.table import AuditRow

AUDIT = AuditRow.__table__  # type: ignore[attr-defined]
# pg_advisory_xact_lock key that serialises sealers ("dispseal").
SEAL_LOCK_KEY = 0x6469737073656131


class AuditChainStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seal(self, batch: int = 5000) -> Anchor | None:
        """Chain every unsealed audit record, oldest id first; returns the new head.

        Sealed in batches of ``batch`` records, one transaction each, so a big backlog
        (the first seal after an upgrade) neither holds locks long nor needs much memory.
        """
        head = self.head()
        while True:
            try:
                with self.engine.connect() as conn:
                    self._lock(conn)
                    head = self._head(conn)
                    records = [
                        _record(r)
                        for r in conn.execute(
                            select(AUDIT)
                            .where(AUDIT.c.seq.is_(None))
                            .order_by(AUDIT.c.id)
                            .limit(batch)
                        ).mappings()
                    ]
                    if not records:
                        return head
                    seals = seal(head, records)
                    _write(conn, seals)
                    conn.commit()
                    last = seals[-1]
                    head = Anchor(last.seq, last.hash, records[-1].at)
            except IntegrityError:
                # Another sealer chained these first: start again from the head it left.
                continue
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot seal the audit chain: {exc}") from exc
            if len(records) < batch:
                return head

    def _lock(self, conn: Connection) -> None:
        """One sealer at a time: an advisory lock until commit on PostgreSQL; on SQLite
        the write lock taken up front (a deferred transaction that read the head first
        could not upgrade to writing once another sealer had committed)."""
        if self.engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEAL_LOCK_KEY})
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def head(self) -> Anchor | None:
        with self.engine.connect() as conn:
            return self._head(conn)

    def unsealed(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(text("count(*)")).select_from(AUDIT).where(AUDIT.c.seq.is_(None))
                ).scalar_one()
            )

    def chain(self) -> Iterator[ChainRecord]:
        """The sealed records in chain order, streamed."""
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=2000).execute(
                select(AUDIT).where(AUDIT.c.seq.is_not(None)).order_by(AUDIT.c.seq)
            )
            for row in rows.mappings():
                yield _record(row)

    @staticmethod
    def _head(conn: Connection) -> Anchor | None:
        row = (
            conn.execute(
                select(AUDIT.c.seq, AUDIT.c.hash, AUDIT.c.at)
                .where(AUDIT.c.seq.is_not(None))
                .order_by(AUDIT.c.seq.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return None if row is None else Anchor(row["seq"], row["hash"], row["at"])


def _write(conn: Connection, seals: list[Seal]) -> None:
    conn.execute(
        update(AUDIT)
        .where(AUDIT.c.id == bindparam("b_id"), AUDIT.c.seq.is_(None))
        .values(
            seq=bindparam("b_seq"),
            prev_hash=bindparam("b_prev"),
            hash=bindparam("b_hash"),
            detail_sha256=bindparam("b_detail"),
        ),
        [
            {
                "b_id": s.id,
                "b_seq": s.seq,
                "b_prev": s.prev_hash,
                "b_hash": s.hash,
                "b_detail": s.detail_sha256,
            }
            for s in seals
        ],
    )


_FIELDS = tuple(f.name for f in fields(ChainRecord))


def _record(row: Any) -> ChainRecord:
    return ChainRecord(**{name: row[name] for name in _FIELDS})
