"""Retention in SQL: which accounts are past a cut-off, legal holds, and the purges.

An account may be purged of a kind of record when it is not being collected (paid,
closed, or nothing owed), carries no legal hold, and nothing has happened on it since the
cut-off: no message changed, no audit record written (other than the purge's own and
legal-hold records, which are not collection activity). Importing the account again is
not activity either: the import rewrites every row it reads, whatever changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, and_, case, exists, not_, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from dispatcher.domain.account import AccountStatus
from dispatcher.domain.audit_chain import PURGED
from dispatcher.domain.retention import NOT_ACTIVITY, RecordKind
from dispatcher.error import InputError
from dispatcher.store.sql import (
    ACCOUNT,
    AUDIT,
    HOLD,
    MESSAGE,
    AuditEntry,
    SqlStore,
    ask_person_review,
)

ACTOR = "system:retention"
PURGED_TEXT = "[purged]"


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge of some accounts removed."""

    accounts: int = 0
    messages: int = 0
    audit_records: int = 0
    holds: int = 0
    files: tuple[str, ...] = ()


class RetentionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- eligibility ------------------------------------------------------------------
    def eligible(self, kind: RecordKind, cutoff: datetime, batch: int = 500) -> Iterator[list[str]]:
        """Account ids past ``cutoff`` that still hold records of ``kind``, in batches."""
        query = (
            select(ACCOUNT.c.account_id)
            .where(_idle_since(cutoff), _holds(kind))
            .order_by(ACCOUNT.c.account_id)
        )
        with self.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(query)]
        for start in range(0, len(ids), batch):
            yield ids[start : start + batch]

    # -- legal holds ------------------------------------------------------------------
    def set_legal_hold(
        self, account_id: str, *, on: bool, note: str, actor: str, now: datetime
    ) -> None:
        """Place or release a legal hold (litigation, a regulator's request), audited."""
        with self.engine.begin() as conn:
            found = conn.execute(
                select(ACCOUNT.c.legal_hold).where(ACCOUNT.c.account_id == account_id)
            ).first()
            if found is None:
                raise InputError(f"no account {account_id!r}")
            if bool(found[0]) == on:
                state = "under a legal hold" if on else "not under a legal hold"
                raise InputError(f"account {account_id!r} is already {state}")
            conn.execute(
                update(ACCOUNT)
                .where(ACCOUNT.c.account_id == account_id)
                .values(legal_hold=on, legal_hold_note=note if on else None)
            )
            SqlStore._audit(
                conn,
                [
                    AuditEntry(
                        "legal_hold_placed" if on else "legal_hold_released",
                        actor,
                        now,
                        account_id,
                        detail={"note": note},
                    )
                ],
            )

    def purges_of(self, account_id: str, kind: RecordKind) -> list[datetime]:
        """When records of ``kind`` of this account were purged, oldest first: what is left
        to say about a record that is gone (its ``account_purged`` records keep their
        detail, which names the kind; the audit-detail purge spares them)."""
        query = (
            select(AUDIT.c.at, AUDIT.c.detail)
            .where(AUDIT.c.account_id == account_id, AUDIT.c.event == "account_purged")
            .order_by(AUDIT.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        found = []
        for at, detail in rows:
            try:
                named = json.loads(detail).get("kind")
            except (ValueError, AttributeError):
                continue  # not ours to read: say nothing rather than guess
            if named == kind.value:
                found.append(at)
        return found

    # -- purges -----------------------------------------------------------------------
    def purge(self, kind: RecordKind, ids: Sequence[str], now: datetime) -> Purged:
        """Remove the records of ``kind`` of these accounts; one transaction, audited.

        Digests stay (``body_sha256`` on messages, ``detail_sha256`` on audit records),
        so the export still shows what was sent and the audit chain still verifies.
        Letter files to delete are returned, for the caller to remove after the commit.
        """
        with self.engine.begin() as conn:
            # Re-checked inside the transaction: a legal hold placed meanwhile wins.
            ids = [
                r[0]
                for r in conn.execute(
                    select(ACCOUNT.c.account_id).where(
                        ACCOUNT.c.account_id.in_(ids), not_(ACCOUNT.c.legal_hold)
                    )
                )
            ]
            if not ids:
                return Purged()
            result = _PURGES[kind](conn, ids, now)
            SqlStore._audit(
                conn,
                [
                    AuditEntry(
                        "account_purged",
                        ACTOR,
                        now,
                        account_id,
                        detail={"kind": kind.value, "rule_id": "RETENTION.purge"},
                    )
                    for account_id in ids
                ],
            )
        return result


def _idle_since(cutoff: datetime) -> ColumnElement[bool]:
    account = ACCOUNT.c.account_id
    return and_(
        or_(ACCOUNT.c.status != AccountStatus.OPEN.value, ACCOUNT.c.balance_minor <= 0),
        not_(ACCOUNT.c.legal_hold),
        ACCOUNT.c.created_at < cutoff,
        not_(exists().where(MESSAGE.c.account_id == account, MESSAGE.c.updated_at >= cutoff)),
        not_(
            exists().where(
                AUDIT.c.account_id == account,
                AUDIT.c.at >= cutoff,
                AUDIT.c.event.not_in(NOT_ACTIVITY),
            )
        ),
    )


def _holds(kind: RecordKind) -> ColumnElement[bool]:
    """The account still has records of ``kind`` (so a purge run is idempotent)."""
    account = ACCOUNT.c.account_id
    if kind is RecordKind.PERSONAL_DATA:
        return ACCOUNT.c.purged_at.is_(None)
    if kind is RecordKind.MESSAGE_CONTENT:
        return exists().where(
            MESSAGE.c.account_id == account,
            or_(MESSAGE.c.body.is_not(None), MESSAGE.c.recipient.is_not(None)),
        )
    return or_(
        exists().where(
            AUDIT.c.account_id == account,
            AUDIT.c.detail != PURGED,
            AUDIT.c.event != "account_purged",
        ),
        exists().where(HOLD.c.account_id == account, HOLD.c.note != PURGED_TEXT),
    )


def _purge_personal_data(conn: Connection, ids: Sequence[str], now: datetime) -> Purged:
    # Before the contacts go: the accounts that shared them lose this person's holds.
    ask_person_review(conn, ids)
    done = conn.execute(
        update(ACCOUNT)
        .where(ACCOUNT.c.account_id.in_(ids))
        .values(
            full_name=PURGED_TEXT,
            phone=None,
            email=None,
            address_line1=None,
            address_line2=None,
            city=None,
            postal_code=None,
            purged_at=now,
        )
    )
    return Purged(accounts=done.rowcount)


def _purge_message_content(conn: Connection, ids: Sequence[str], now: datetime) -> Purged:
    files = tuple(
        str(r[0])
        for r in conn.execute(
            select(MESSAGE.c.artifact_path).where(
                MESSAGE.c.account_id.in_(ids), MESSAGE.c.artifact_path.is_not(None)
            )
        )
    )
    done = conn.execute(
        update(MESSAGE)
        .where(MESSAGE.c.account_id.in_(ids))
        .values(recipient=None, subject=None, body=None, body_html=None, artifact_path=None)
    )
    return Purged(accounts=len(ids), messages=done.rowcount, files=files)


def _purge_audit_detail(conn: Connection, ids: Sequence[str], now: datetime) -> Purged:
    records = conn.execute(
        update(AUDIT)
        .where(
            AUDIT.c.account_id.in_(ids),
            AUDIT.c.detail != PURGED,
            AUDIT.c.event != "account_purged",
        )
        .values(detail=PURGED)
    )
    holds = conn.execute(
        update(HOLD)
        .where(HOLD.c.account_id.in_(ids))
        .values(
            note=PURGED_TEXT,
            lift_note=case((HOLD.c.lift_note.is_(None), None), else_=PURGED_TEXT),
        )
    )
    return Purged(accounts=len(ids), audit_records=records.rowcount, holds=holds.rowcount)


_PURGES = {
    RecordKind.PERSONAL_DATA: _purge_personal_data,
    RecordKind.MESSAGE_CONTENT: _purge_message_content,
    RecordKind.AUDIT_DETAIL: _purge_audit_detail,
}


def remove_files(paths: Sequence[str]) -> int:
    """Delete purged letter files; a file already gone is not an error."""
    removed = 0
    for path in paths:
        try:
            Path(path).unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed
