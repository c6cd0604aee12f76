"""The SQL store: every read and write of accounts, outbox and audit, on SQLite or PostgreSQL.

Bulk paths (import, plan) use SQLAlchemy Core with ``executemany`` so a million accounts
stay fast; every method that changes more than one table does it in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from dispatcher.domain.account import Account, AccountStatus, Flag, HoldRecord, PostalAddress
from dispatcher.domain.decision import Existing
from dispatcher.domain.message import WENT_OUT, MessageKey, MessageStatus
from dispatcher.domain.money import from_minor
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError, StoreError
from dispatcher.store import schema
from dispatcher.store.schema import Migration
from dispatcher.store.table import AccountBase, AccountRow, AuditRow, HoldRow, MessageRow, RunRow

ACCOUNT: Table = AccountRow.__table__  # type: ignore[attr-defined]
MESSAGE: Table = MessageRow.__table__  # type: ignore[attr-defined]
AUDIT: Table = AuditRow.__table__  # type: ignore[attr-defined]
HOLD: Table = HoldRow.__table__  # type: ignore[attr-defined]
RUN: Table = RunRow.__table__  # type: ignore[attr-defined]

# Import flags that are holds: flag column → (hold reason, channel it covers or None).
FLAG_HOLDS: dict[str, tuple[str, str | None]] = {
    "dispute": ("dispute", None),
    "bankruptcy": ("bankruptcy", None),
    "cease_and_desist": ("cease_and_desist", None),
    "deceased": ("deceased", None),
    "do_not_contact": ("do_not_contact", None),
    "opt_out_sms": ("opted_out_sms", "sms"),
    "opt_out_email": ("opted_out_email", "email"),
}

_ACCOUNT_FIELDS = tuple(AccountBase.model_fields)
_FLAG_COLUMNS = tuple((flag.value, flag) for flag in Flag)  # (column, flag)
PENDING = (MessageStatus.HELD.value, MessageStatus.QUEUED.value)
_HELD = MessageStatus.HELD.value


# Pages of WAL before a commit copies them back into the database file (SQLite's default
# is 1,000, 4 MB), and the size the WAL file is cut back to afterwards. Why larger: a plan's
# batch dirties pages all over the message table's indexes (message ids are hashes), and
# each checkpoint writes every page changed since the last one once, however many commits
# changed it; checkpointing every ~10 batches rather than after each cut what a first plan
# of 100k accounts writes from 2.7 to 2.4 GB alone (docs/BENCHMARKS.md, "Write amplification").
WAL_AUTOCHECKPOINT_PAGES: Final = 16_000
WAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024
# Each connection's page cache, in KiB (SQLite's default is 2 MiB). Why larger: with 2 MiB
# a batch's inserts into those indexes evict the pages the next row needs, which are then
# read back (3.3 GB of reads in a first plan of 100k accounts; 1.5 / 1.2 / 0.9 GB at 8 / 12 /
# 16 MiB) and dirty pages are spilled to the WAL before the commit. Why not 16 MiB: a plan
# of 1M accounts with 2 workers then holds 508 MB at its peak, over the 500 MB it must
# stay under (issue 8); 493 MB at 12 MiB. Filled only as pages are read.
PAGE_CACHE_KIB: Final = 12 * 1024
SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
    f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}",
    f"PRAGMA cache_size=-{PAGE_CACHE_KIB}",
)


def configure_sqlite(engine: Engine, *, busy_timeout_ms: int = 10000) -> None:
    """WAL for concurrent readers, a busy timeout instead of instant 'database is locked'."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()


# json.dumps(detail, default=str, sort_keys=True, ensure_ascii=False), without building
# an encoder for each of the hundreds of thousands of records a plan writes.
_detail_json = json.JSONEncoder(default=str, sort_keys=True, ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class AuditEntry:
    event: str
    actor: str
    at: datetime
    account_id: str | None = None
    message_id: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        return {
            "at": self.at,
            "event": self.event,
            "actor": self.actor,
            "account_id": self.account_id,
            "message_id": self.message_id,
            "detail": _detail_json(self.detail),
        }


@dataclass(frozen=True, slots=True)
class ContactRow:
    """A message that counts for caps, with the person keys of its account."""

    message_id: str
    account_id: str
    phone: str | None
    email: str | None
    channel: ChannelKind
    at: datetime


@dataclass(slots=True)
class PlanWrite:
    """Everything one planner batch writes, applied in one transaction."""

    inserts: list[dict[str, object]] = field(default_factory=list)
    updates: list[dict[str, object]] = field(default_factory=list)
    ends: list[dict[str, object]] = field(default_factory=list)
    # Audit rows (AuditEntry.row()): made where the batch is planned, a worker process
    # included, so the writing process only writes.
    audits: list[dict[str, object]] = field(default_factory=list)
    # Each planned account's next review (docs/PLANNING.md, "Reviews"): account_id, at,
    # key, and the review_seq read with the account (the review is not recorded if a
    # change bumped it meanwhile).
    reviews: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reviewing:
    """A plan that looks only at the accounts due for review at ``now`` under the
    configuration ``key``: never reviewed, review time reached, or reviewed under
    another configuration (docs/PLANNING.md, "Reviews")."""

    now: datetime
    key: str


@dataclass(frozen=True, slots=True)
class Plannable:
    """One page's plannable accounts in id order, with the ``review_seq`` read with each."""

    accounts: list[Account]
    review_seqs: dict[str, int]


@dataclass(frozen=True, slots=True)
class Page:
    """A range of account ids, ``after`` (exclusive) to ``last`` (inclusive): one plan batch."""

    after: str
    last: str


@dataclass(frozen=True, slots=True)
class BatchContacts:
    """What caps need to know about a plan batch's persons, read once for the batch.

    ``rows``: the contacts of the batch's own accounts. ``reaching_out``: the phone numbers
    and email addresses that the batch shares with accounts outside it; a person reached
    that way may have contacts queued by another batch, so such accounts are settled only
    in the batch's turn to write, after the batches before are written.
    """

    rows: list[ContactRow]
    reaching_out: frozenset[str]


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    message_id: str
    account_id: str
    channel: ChannelKind
    recipient: str
    subject: str | None
    body: str
    body_html: str | None
    locale: str | None
    attempts: int
    cycle: int = 1
    stage: str = ""
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderHold:
    """A hold a provider's answer calls for (21610 opted out, an invalid number or
    mailbox), placed on every account whose ``key`` ("phone" or "email") is ``value``."""

    account_id: str
    reason: str
    channel: str
    key: str
    value: str
    source: str
    note: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one delivery attempt came to: the outbox columns it sets and its audit, and
    the holds the provider's answer calls for."""

    message_id: str
    values: Mapping[str, object]
    audit: Sequence[AuditEntry] = ()
    holds: Sequence[ProviderHold] = ()


@dataclass(frozen=True, slots=True)
class StaleSend:
    """A message left ``sending`` past its lease: its hand-over was interrupted."""

    message_id: str
    account_id: str
    channel: ChannelKind
    attempts: int
    recipient: str
    body: str
    # When it was claimed (or last marked uncertain); the reconciler's guard.
    updated_at: datetime
    # When it was handed to a channel that cannot be looked up; None: never handed over.
    handed_over_at: datetime | None


@dataclass
class Claim:
    """Due messages locked for one worker, with what the sender re-checks before delivery."""

    conn: Connection
    now: datetime
    messages: list[ClaimedMessage]
    accounts: dict[str, Account]
    contacts: list[ContactRow]

    def take(self, message_ids: Sequence[str]) -> set[str]:
        """Mark these messages ``sending`` (before any provider call); returns those taken.

        Only a message still ``queued`` is taken, so a message some other process took
        meanwhile is never handed over twice.
        """
        if not message_ids:
            return set()
        taken = self.conn.execute(
            update(MESSAGE)
            .where(
                MESSAGE.c.message_id.in_(list(message_ids)),
                MESSAGE.c.status == MessageStatus.QUEUED.value,
            )
            .values(status=MessageStatus.SENDING.value, updated_at=self.now)
            .returning(MESSAGE.c.message_id)
        ).scalars()
        return set(taken)

    _settled: list[tuple[str, Mapping[str, object]]] = field(default_factory=list)
    _audits: list[AuditEntry] = field(default_factory=list)

    def finish(
        self, message_id: str, values: Mapping[str, object], audit: Iterable[AuditEntry]
    ) -> None:
        """Settle a message without delivering it (held, deferred, expired), audited.

        Written when the claim commits, in the order settled, in one statement per kind of
        change: a pass that defers thousands of messages to the next window (the evening a
        window closes) would otherwise pay a statement and an insert for each.
        """
        self._settled.append((message_id, values))
        self._audits.extend(audit)

    def _write(self) -> None:
        """Write what :meth:`finish` settled, inside the claim's transaction."""
        by_columns: defaultdict[tuple[str, ...], list[dict[str, object]]] = defaultdict(list)
        for message_id, values in self._settled:
            row = {f"new_{k}": v for k, v in values.items()}
            by_columns[tuple(values)].append({"settled_id": message_id, **row})
        for columns, rows in by_columns.items():
            statement = (
                update(MESSAGE)
                .where(MESSAGE.c.message_id == bindparam("settled_id"))
                .values({c: bindparam(f"new_{c}", type_=MESSAGE.c[c].type) for c in columns})
            )
            self.conn.execute(statement, rows)
        # A message held at send is re-evaluated by the planner, which must look again.
        held = {m for m, values in self._settled if values.get("status") == _HELD}
        if held:
            ask_review(self.conn, (m.account_id for m in self.messages if m.message_id in held))
        SqlStore._audit(self.conn, self._audits)
        self._settled.clear()
        self._audits.clear()


@dataclass
class Tracked:
    """One message found by its provider id, locked until the transaction ends, for a
    provider's report about it (a status callback) to be applied and audited."""

    store: SqlStore
    conn: Connection
    message: RowMapping | None

    def update(self, values: Mapping[str, object]) -> None:
        assert self.message is not None
        self.conn.execute(
            update(MESSAGE)
            .where(MESSAGE.c.message_id == self.message["message_id"])
            .values(**values)
        )
        if values.get("status") == _HELD:  # the planner re-evaluates held messages
            ask_review(self.conn, [self.message["account_id"]])

    def account(self) -> Account | None:
        """The message's account with its holds, read in the same transaction."""
        assert self.message is not None
        account_id = self.message["account_id"]
        return self.store._accounts(self.conn, [account_id]).get(account_id)

    def audit(self, entries: Iterable[AuditEntry]) -> None:
        SqlStore._audit(self.conn, entries)


# Enum members by stored value: a dict lookup, where calling the enum class costs a
# microsecond or two, read hundreds of thousands of times a plan.
_CHANNEL: Final = {k.value: k for k in ChannelKind}
_STATUS: Final = {s.value: s for s in MessageStatus}
_ACCOUNT_STATUS: Final = {s.value: s for s in AccountStatus}


# Columns a planner update may change on an existing outbox row (a release or a new hold).
UPDATABLE_FIELDS = (
    "status",
    "hold_reason",
    "rule_id",
    "hold_until",
    "dpd",
    "locale",
    "recipient",
    "template_id",
    "template_version",
    "template_sha256",
    "subject",
    "body",
    "body_html",
    "body_sha256",
    "scheduled_for",
    "updated_at",
)


class SqlStore:
    """The database behind dispatcher. Built by bootstrap from one Engine."""

    def __init__(self, engine: Engine, *, busy_timeout_seconds: float = 10.0) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        # What SQLite connections were set to wait for a write lock; a plan worker opening
        # its own connection to the same file waits as long.
        self.busy_timeout_seconds = busy_timeout_seconds

    # -- schema ---------------------------------------------------------------------------
    def create_schema(self) -> Migration:
        """Create or upgrade the schema to this dispatcher's newest migration (idempotent).

        Migrations, not ``create_all``: an existing database must change in place, keeping
        its data, the same way on SQLite and PostgreSQL.
        """
        return schema.upgrade(self.engine)

    def downgrade_schema(self, revision: str) -> Migration:
        """Take the schema back to ``revision`` (``-1``: one step), for rolling back an
        upgrade of dispatcher; what the undone migrations added is dropped."""
        return schema.downgrade(self.engine, revision)

    def back_up(self, target: Path) -> None:
        """Write a consistent copy of a SQLite database to ``target`` while it is in use.

        ``VACUUM INTO`` reads one snapshot (the WAL included), so a running ``serve`` need
        not stop; copying the file alone could miss what still sits in the -wal file.
        PostgreSQL has its own tools (pg_dump, base backups): they are refused here.
        """
        if self._dialect != "sqlite":
            raise StoreError(
                "backup copies SQLite databases only; back up PostgreSQL with pg_dump "
                "(docs/OPERATIONS.md)"
            )
        if target.exists():
            raise StoreError(f"{target}: exists already; choose a new file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("VACUUM INTO ?", (str(target),))
        except SQLAlchemyError as exc:
            raise StoreError(
                f"{target}: backup failed: {getattr(exc, 'orig', None) or exc}"
            ) from exc

    def schema_revision(self) -> str | None:
        """The migration the database is at (None: not initialised)."""
        return schema.current_revision(self.engine)

    def check_schema(self) -> None:
        """Fail with a clear message when ``dispatcher init`` has not been run, or must run
        again because this dispatcher brings migrations the database lacks."""
        schema.check(self.engine)

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    # -- accounts -------------------------------------------------------------------------
    def upsert_accounts(
        self, rows: Sequence[Mapping[str, object]], now: datetime, audit: Iterable[AuditEntry] = ()
    ) -> tuple[int, int]:
        """Insert or update accounts by ``account_id``; returns (inserted, updated).

        A cured account (paid, closed or zero balance) that comes back open with a balance
        starts a new collection cycle, so its ladder of messages starts again.
        """
        if not rows:
            return 0, 0
        ids = [str(row["account_id"]) for row in rows]
        stmt = self._insert(ACCOUNT)
        new = stmt.excluded
        cured = or_(ACCOUNT.c.status != AccountStatus.OPEN.value, ACCOUNT.c.balance_minor <= 0)
        reopened = and_(new.status == AccountStatus.OPEN.value, new.balance_minor > 0)
        assignments: dict[str, Any] = {name: new[name] for name in _ACCOUNT_FIELDS}
        del assignments["account_id"]
        assignments["updated_at"] = new.updated_at
        assignments["cycle"] = case(
            (and_(cured, reopened), ACCOUNT.c.cycle + 1), else_=ACCOUNT.c.cycle
        )
        # New data: the planner looks at the account again at its next plan.
        assignments["review_key"] = None
        assignments["review_seq"] = ACCOUNT.c.review_seq + 1
        stmt = stmt.on_conflict_do_update(index_elements=["account_id"], set_=assignments)
        params = [{**row, "cycle": 1, "created_at": now, "updated_at": now} for row in rows]
        flag_columns = [ACCOUNT.c[name] for name in FLAG_HOLDS]
        with self.engine.begin() as conn:
            before = {
                r["account_id"]: r
                for r in conn.execute(
                    select(
                        ACCOUNT.c.account_id, ACCOUNT.c.phone, ACCOUNT.c.email, *flag_columns
                    ).where(ACCOUNT.c.account_id.in_(ids))
                ).mappings()
            }
            conn.execute(stmt, params)
            # A person-scope hold reaches whoever shares the phone or email: an account
            # whose contacts changed takes its holds from one person to another, so both
            # persons' accounts are looked at again.
            moved = [
                (old[column], row.get(column))
                for row in rows
                if (old := before.get(str(row["account_id"]))) is not None
                for column in ("phone", "email")
                if old[column] != row.get(column)
            ]
            if moved:
                contacts = {str(value) for pair in moved for value in pair if value}
                _ask_review_sharing(conn, contacts)
            self._sync_flag_holds(conn, rows, before, now)
            self._audit(conn, audit)
        return len(rows) - len(before), len(before)

    def _sync_flag_holds(
        self,
        conn: Connection,
        rows: Sequence[Mapping[str, object]],
        before: Mapping[str, RowMapping],
        now: datetime,
    ) -> None:
        """An import that sets a hold flag places a hold record; one that clears it lifts
        the record it placed. Both are audited, so the history shows when and by what."""
        placed: list[dict[str, object]] = []
        lifted: list[tuple[str, str]] = []
        for row in rows:
            account_id = str(row["account_id"])
            old = before.get(account_id)
            for flag, (reason, channel) in FLAG_HOLDS.items():
                was, now_set = bool(old[flag]) if old else False, bool(row[flag])
                if now_set and not was:
                    placed.append(
                        {
                            "account_id": account_id,
                            "reason": reason,
                            "channel": channel,
                            "scope": "account",
                            "starts_at": now,
                            "ends_at": None,
                            "note": "flag set by import",
                            "source": "import",
                            "created_by": "system:importer",
                            "created_at": now,
                        }
                    )
                elif was and not now_set:
                    lifted.append((account_id, reason))
        if placed:
            conn.execute(HOLD.insert(), placed)
        for account_id, reason in lifted:
            conn.execute(
                update(HOLD)
                .where(
                    HOLD.c.account_id == account_id,
                    HOLD.c.reason == reason,
                    HOLD.c.source == "import",
                    HOLD.c.lifted_at.is_(None),
                )
                .values(
                    lifted_at=now, lifted_by="system:importer", lift_note="flag cleared by import"
                )
            )
        self._audit(
            conn,
            [
                *(
                    AuditEntry(
                        "hold_added",
                        "system:importer",
                        now,
                        str(p["account_id"]),
                        detail={"reason": p["reason"], "channel": p["channel"], "source": "import"},
                    )
                    for p in placed
                ),
                *(
                    AuditEntry(
                        "hold_lifted",
                        "system:importer",
                        now,
                        account_id,
                        detail={"reason": reason, "source": "import"},
                    )
                    for account_id, reason in lifted
                ),
            ],
        )

    # -- holds ----------------------------------------------------------------------------
    def add_hold(
        self,
        account_id: str,
        reason: str,
        *,
        channel: str | None,
        scope: str,
        starts_at: datetime,
        ends_at: datetime | None,
        note: str,
        actor: str,
        now: datetime,
    ) -> int:
        """Place a hold with its evidence note; returns its id. Audited in the same commit."""
        with self.engine.begin() as conn:
            inserted = conn.execute(
                HOLD.insert().values(
                    account_id=account_id,
                    reason=reason,
                    channel=channel,
                    scope=scope,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    note=note,
                    source="manual",
                    created_by=actor,
                    created_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            hold_id = inserted[0]
            if scope == "person":
                ask_person_review(conn, [account_id])
            else:
                ask_review(conn, [account_id])
            self._audit(
                conn,
                [
                    AuditEntry(
                        "hold_added",
                        actor,
                        now,
                        account_id,
                        detail={
                            "hold_id": hold_id,
                            "reason": reason,
                            "channel": channel,
                            "scope": scope,
                            "starts_at": starts_at.isoformat(),
                            "ends_at": ends_at.isoformat() if ends_at else None,
                            "note": note,
                        },
                    )
                ],
            )
        return int(hold_id)

    def lift_hold(self, hold_id: int, *, note: str, actor: str, now: datetime) -> str:
        """Lift an active hold; returns its account id. Lifted holds stay in the history."""
        with self.engine.begin() as conn:
            found = conn.execute(select(HOLD).where(HOLD.c.id == hold_id)).mappings().first()
            if found is None:
                raise InputError(f"no hold {hold_id}")
            if found["lifted_at"] is not None:
                raise InputError(f"hold {hold_id} was already lifted at {found['lifted_at']}")
            conn.execute(
                update(HOLD)
                .where(HOLD.c.id == hold_id)
                .values(lifted_at=now, lifted_by=actor, lift_note=note)
            )
            if found["scope"] == "person":
                ask_person_review(conn, [found["account_id"]])
            else:
                ask_review(conn, [found["account_id"]])
            self._audit(
                conn,
                [
                    AuditEntry(
                        "hold_lifted",
                        actor,
                        now,
                        found["account_id"],
                        detail={"hold_id": hold_id, "reason": found["reason"], "note": note},
                    )
                ],
            )
        return str(found["account_id"])

    def holds_of(self, account_id: str) -> list[RowMapping]:
        """Every hold of the account, active and lifted, oldest first."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(HOLD).where(HOLD.c.account_id == account_id).order_by(HOLD.c.id)
                ).mappings()
            )

    def account(self, account_id: str) -> Account | None:
        return self.accounts([account_id]).get(account_id)

    def accounts(self, account_ids: Iterable[str]) -> dict[str, Account]:
        """Accounts by id, each with its active hold records."""
        with self.engine.connect() as conn:
            return self._accounts(conn, account_ids)

    def _accounts(self, conn: Connection, account_ids: Iterable[str]) -> dict[str, Account]:
        ids = list(set(account_ids))
        rows = conn.execute(select(ACCOUNT).where(ACCOUNT.c.account_id.in_(ids))).mappings()
        return {a.account_id: a for a in self._with_holds(conn, list(rows))}

    def _with_holds(self, conn: Connection, rows: Sequence[RowMapping]) -> list[Account]:
        """Map rows to accounts carrying their active holds, and those of the same person
        (a person-scope hold on any account sharing the phone or email)."""
        if not rows:
            return []
        ids = [r["account_id"] for r in rows]
        phones = [r["phone"] for r in rows if r["phone"]]
        emails = [r["email"] for r in rows if r["email"]]
        active = (
            select(HOLD, ACCOUNT.c.phone, ACCOUNT.c.email)
            .join(ACCOUNT, ACCOUNT.c.account_id == HOLD.c.account_id)
            .where(HOLD.c.lifted_at.is_(None))
        )
        person = HOLD.c.scope == "person"
        # One indexed query per way a hold can reach an account (an OR would scan).
        found = {
            h["id"]: h for h in conn.execute(active.where(HOLD.c.account_id.in_(ids))).mappings()
        }
        if phones:
            found.update(
                (h["id"], h)
                for h in conn.execute(active.where(person, ACCOUNT.c.phone.in_(phones))).mappings()
            )
        if emails:
            found.update(
                (h["id"], h)
                for h in conn.execute(active.where(person, ACCOUNT.c.email.in_(emails))).mappings()
            )
        reaching: defaultdict[tuple[str, str], list[HoldRecord]] = defaultdict(list)
        for h in found.values():
            record = HoldRecord(h["id"], h["reason"], h["channel"], h["starts_at"], h["ends_at"])
            reaching[("account", h["account_id"])].append(record)
            if h["scope"] == "person":
                if h["phone"]:
                    reaching[("phone", h["phone"])].append(record)
                if h["email"]:
                    reaching[("email", h["email"])].append(record)
        accounts = []
        for row in rows:
            account = to_account(row)
            mine = {r.id: r for r in reaching.get(("account", account.account_id), ())}
            for key in (("phone", account.phone), ("email", account.email)):
                if key[1]:
                    mine.update((r.id, r) for r in reaching.get((key[0], key[1]), ()))
            accounts.append(replace(account, holds=tuple(mine.values())) if mine else account)
        return accounts

    def plannable_batches(
        self, due_on_or_before: date, batch_size: int, reviewing: Reviewing | None = None
    ) -> Iterator[list[Account]]:
        """Accounts the planner must look at, in id order, ``batch_size`` at a time.

        Collectible accounts due by ``due_on_or_before`` (the pre-due window plus a day of
        time-zone margin), and every account with a pending message, since a payment or a
        new cycle must end those; with ``reviewing``, only those due for review.
        """
        for page in self.plannable_pages(due_on_or_before, batch_size, reviewing):
            yield self.plannable_in(due_on_or_before, page, reviewing).accounts

    def plannable_pages(
        self, due_on_or_before: date, batch_size: int, reviewing: Reviewing | None = None
    ) -> Iterator[Page]:
        """The id ranges of :meth:`plannable_batches`, each holding ``batch_size`` plannable
        accounts (the last fewer): cheap to list, so the accounts themselves can be read
        where they are planned (a plan worker's own connection)."""
        wanted = _plannable(due_on_or_before, reviewing)
        after = ""
        while True:
            with self.engine.connect() as conn:
                ids = (
                    conn.execute(
                        select(ACCOUNT.c.account_id)
                        .where(ACCOUNT.c.account_id > after, wanted)
                        .order_by(ACCOUNT.c.account_id)
                        .limit(batch_size)
                    )
                    .scalars()
                    .all()
                )
            if not ids:
                return
            yield Page(after, ids[-1])
            after = ids[-1]

    def plannable_in(
        self, due_on_or_before: date, page: Page, reviewing: Reviewing | None = None
    ) -> Plannable:
        """The plannable accounts of ``page`` in id order, each with its active holds."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(ACCOUNT)
                    .where(
                        ACCOUNT.c.account_id > page.after,
                        ACCOUNT.c.account_id <= page.last,
                        _plannable(due_on_or_before, reviewing),
                    )
                    .order_by(ACCOUNT.c.account_id)
                )
                .mappings()
                .all()
            )
            seqs = {r["account_id"]: r["review_seq"] for r in rows}
            return Plannable(self._with_holds(conn, rows), seqs)

    def count_plannable(self, due_on_or_before: date, reviewing: Reviewing | None = None) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).select_from(ACCOUNT)
            wanted = _plannable(due_on_or_before, reviewing)
            return int(conn.execute(query.where(wanted)).scalar_one())

    # -- planning -------------------------------------------------------------------------
    def existing_messages(self, account_ids: Sequence[str]) -> dict[str, list[Existing]]:
        """Every message recorded for these accounts, as the planner's pure core wants it."""
        found: dict[str, list[Existing]] = defaultdict(list)
        columns = (
            MESSAGE.c.account_id,
            MESSAGE.c.cycle,
            MESSAGE.c.stage,
            MESSAGE.c.step,
            MESSAGE.c.channel,
            MESSAGE.c.status,
            MESSAGE.c.hold_reason,
        )
        with self.engine.connect() as conn:
            for account_id, cycle, stage, step, channel, status, reason in conn.execute(
                select(*columns).where(MESSAGE.c.account_id.in_(list(account_ids)))
            ):
                key = MessageKey(account_id, cycle, stage, step, _CHANNEL[channel])
                found[account_id].append(Existing(key, _STATUS[status], reason))
        return found

    def contacts(
        self, accounts: Sequence[Account], since: datetime, statuses: Sequence[MessageStatus]
    ) -> list[ContactRow]:
        """Messages that count against caps for the persons of ``accounts``.

        A person is every account sharing an account's phone number or email address, so
        one person with three debts is capped once, not three times. A message counts at
        its sent time, else at the time it is scheduled for.
        """
        with self.engine.connect() as conn:
            return self._contacts(conn, accounts, since, statuses)

    def batch_contacts(
        self, accounts: Sequence[Account], since: datetime, statuses: Sequence[MessageStatus]
    ) -> BatchContacts:
        """The contacts that count against caps for a batch's persons that lie wholly in the
        batch, and which of the batch's accounts share a phone or email with an account
        outside it (:class:`BatchContacts`)."""
        mine = {a.account_id for a in accounts}
        with self.engine.connect() as conn:
            reaching_out = frozenset(
                value for account_id, value in _sharing(conn, accounts) if account_id not in mine
            )
            rows = self._contact_rows(conn, mine, since, statuses)
        return BatchContacts(rows, reaching_out)

    @staticmethod
    def _contacts(
        conn: Connection,
        accounts: Sequence[Account],
        since: datetime,
        statuses: Sequence[MessageStatus],
    ) -> list[ContactRow]:
        person_ids = {a.account_id for a in accounts}
        person_ids.update(account_id for account_id, _ in _sharing(conn, accounts))
        return SqlStore._contact_rows(conn, person_ids, since, statuses)

    @staticmethod
    def _contact_rows(
        conn: Connection,
        person_ids: Collection[str],
        since: datetime,
        statuses: Sequence[MessageStatus],
    ) -> list[ContactRow]:
        # The status is tested here, not in SQL: offered `status IN (...)`, SQLite (without
        # statistics) walks ix_message_due over every queued message of the table, which a
        # first plan grows batch by batch, so its reads grew with the square of the
        # portfolio. By account (ix_message_account) the persons' messages are few.
        counted = {s.value for s in statuses}
        rows = conn.execute(
            select(
                MESSAGE.c.message_id,
                MESSAGE.c.account_id,
                ACCOUNT.c.phone,
                ACCOUNT.c.email,
                MESSAGE.c.channel,
                MESSAGE.c.status,
                MESSAGE.c.sent_at,
                MESSAGE.c.scheduled_for,
            )
            .join(ACCOUNT, ACCOUNT.c.account_id == MESSAGE.c.account_id)
            .where(
                MESSAGE.c.account_id.in_(person_ids),
                func.coalesce(MESSAGE.c.sent_at, MESSAGE.c.scheduled_for) >= since,
            )
        ).all()
        return [
            ContactRow(
                r.message_id,
                r.account_id,
                r.phone,
                r.email,
                _CHANNEL[r.channel],
                r.sent_at or r.scheduled_for,
            )
            for r in rows
            if r.status in counted and (r.sent_at or r.scheduled_for) is not None
        ]

    def apply_plan(self, write: PlanWrite) -> None:
        """Write one batch's decisions, outbox rows and audit records in one transaction."""
        with self.engine.begin() as conn:
            if write.inserts:
                new_messages = self._insert(MESSAGE).on_conflict_do_nothing(
                    index_elements=["idempotency_key"]
                )
                if conn.dialect.name == "sqlite":
                    _insert_many(conn, new_messages, write.inserts)
                else:
                    conn.execute(new_messages, write.inserts)
            if write.updates:
                values: dict[str, Any] = {n: bindparam(f"v_{n}") for n in UPDATABLE_FIELDS}
                conn.execute(
                    update(MESSAGE)
                    .where(MESSAGE.c.message_id == bindparam("v_message_id"))
                    .values(values),
                    [
                        {f"v_{k}": row[k] for k in ("message_id", *UPDATABLE_FIELDS)}
                        for row in write.updates
                    ],
                )
            if write.ends:
                conn.execute(
                    update(MESSAGE)
                    .where(
                        MESSAGE.c.message_id == bindparam("v_message_id"),
                        # Not IN (...): an expanding list cannot go into executemany.
                        or_(*(MESSAGE.c.status == status for status in PENDING)),
                    )
                    .values(
                        status=bindparam("v_status"),
                        hold_reason=bindparam("v_hold_reason"),
                        updated_at=bindparam("v_updated_at"),
                    ),
                    [{f"v_{k}": v for k, v in row.items()} for row in write.ends],
                )
            if write.audits and conn.dialect.name == "sqlite":
                _insert_many(conn, AUDIT.insert(), write.audits)
            elif write.audits:
                conn.execute(AUDIT.insert(), write.audits)
            if write.reviews:
                conn.execute(
                    update(ACCOUNT)
                    .where(
                        ACCOUNT.c.account_id == bindparam("r_account_id"),
                        # Not if a change (a hold, an import) came after the plan read it.
                        ACCOUNT.c.review_seq == bindparam("r_seq"),
                    )
                    .values(
                        review_at=bindparam("r_at", type_=ACCOUNT.c.review_at.type),
                        review_key=bindparam("r_key"),
                    ),
                    [{f"r_{k}": v for k, v in row.items()} for row in write.reviews],
                )

    # -- sending --------------------------------------------------------------------------
    @contextmanager
    def claiming(self, now: datetime, limit: int, counted_since: datetime) -> Iterator[Claim]:
        """Lock up to ``limit`` queued messages whose time has come, for one worker.

        Everything the sender must re-check before delivery (the accounts with their
        holds, and the persons' recent contacts) is read inside the same transaction.
        On PostgreSQL the rows are taken with ``FOR UPDATE SKIP LOCKED`` (workers never
        wait for each other's rows) and every person in the batch is locked with a
        transaction advisory lock, so two workers cannot both decide that a person still
        has room under a cap: the second sees the first's messages as ``sending``.
        The sender marks what it hands over with :meth:`Claim.take` and settles the
        rest with :meth:`Claim.finish`; all of it commits together.
        """
        due = and_(
            MESSAGE.c.status == MessageStatus.QUEUED.value,
            or_(MESSAGE.c.scheduled_for.is_(None), MESSAGE.c.scheduled_for <= now),
            or_(MESSAGE.c.next_attempt_at.is_(None), MESSAGE.c.next_attempt_at <= now),
        )
        query = (
            select(MESSAGE).where(due).order_by(MESSAGE.c.scheduled_for, MESSAGE.c.message_id)
        ).limit(limit)
        postgres = self._dialect == "postgresql"
        if postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            if not postgres:
                # One writer at a time on SQLite: take the write lock before reading, so
                # a second process (a CLI `send` beside the service) waits, then sees
                # these messages as taken.
                conn.exec_driver_sql("UPDATE message SET status = status WHERE 0")
            rows = conn.execute(query).mappings().all()
            accounts = self._accounts(conn, {r["account_id"] for r in rows}) if rows else {}
            if postgres and accounts:
                _lock_persons(conn, accounts.values())
            contacts = (
                self._contacts(
                    conn,
                    list(accounts.values()),
                    counted_since,
                    (*WENT_OUT, MessageStatus.SENDING, MessageStatus.UNKNOWN),
                )
                if accounts
                else []
            )
            claim = Claim(
                conn=conn,
                now=now,
                messages=[_claimed(r) for r in rows],
                accounts=accounts,
                contacts=contacts,
            )
            yield claim
            claim._write()

    def finish_send(
        self, message_id: str, values: Mapping[str, object], audit: Iterable[AuditEntry]
    ) -> None:
        """Record the outcome of one delivery attempt and its audit record together."""
        self.finish_sends([AttemptRecord(message_id, values, tuple(audit))])

    def finish_sends(
        self,
        outcomes: Sequence[AttemptRecord],
        handing_over: Sequence[tuple[str, datetime]] = (),
    ) -> None:
        """Record many delivery outcomes and their audit records in one transaction.

        ``handing_over`` (message id, time) stamps ``sent_at`` on messages about to be
        handed to a channel that cannot be looked up (SMTP), in the same transaction: a
        ``sending`` message without that stamp was never handed over, so after a crash it
        can be queued again safely; one with it is of unknown outcome.

        Outcomes that set the same columns go in one ``executemany`` (pipelined on
        PostgreSQL): a round trip per message was what limited delivery throughput.
        """
        if not outcomes and not handing_over:
            return
        groups: dict[tuple[str, ...], list[AttemptRecord]] = defaultdict(list)
        for outcome in outcomes:
            groups[tuple(sorted(outcome.values))].append(outcome)
        with self.engine.begin() as conn:
            if handing_over:
                conn.execute(
                    update(MESSAGE)
                    .where(
                        MESSAGE.c.message_id == bindparam("v_message_id"),
                        MESSAGE.c.status == MessageStatus.SENDING.value,
                    )
                    .values(sent_at=bindparam("v_sent_at")),
                    [{"v_message_id": m, "v_sent_at": at} for m, at in handing_over],
                )
            holds = [h for o in outcomes for h in o.holds]
            if holds:
                self._place_provider_holds(conn, holds)
            for columns, group in groups.items():
                conn.execute(
                    update(MESSAGE)
                    .where(MESSAGE.c.message_id == bindparam("v_message_id"))
                    .values({name: bindparam(f"v_{name}") for name in columns}),
                    [
                        {"v_message_id": o.message_id, **{f"v_{k}": v for k, v in o.values.items()}}
                        for o in group
                    ],
                )
            self._audit(conn, [entry for o in outcomes for entry in o.audit])

    def finish_handover(self, outcomes: Sequence[AttemptRecord]) -> int:
        """Record messages handed over in a batch (print house); returns how many.

        A batch is reported until it is acknowledged, so after a crash it can come
        twice: messages already ``handed_to_print`` are skipped, audit records included.
        """
        done: set[str] = set()
        ids = [o.message_id for o in outcomes]
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                done.update(
                    conn.execute(
                        select(MESSAGE.c.message_id).where(
                            MESSAGE.c.message_id.in_(ids[start : start + 500]),
                            MESSAGE.c.status == MessageStatus.HANDED_TO_PRINT.value,
                        )
                    ).scalars()
                )
        fresh = [o for o in outcomes if o.message_id not in done]
        self.finish_sends(fresh)
        return len(fresh)

    def _place_provider_holds(self, conn: Connection, holds: Sequence[ProviderHold]) -> None:
        """Place each hold on every account sharing the phone or address, unless one of the
        same reason and channel is in force there already; each placement audited."""
        placed: list[dict[str, object]] = []
        for hold in holds:
            column = ACCOUNT.c.phone if hold.key == "phone" else ACCOUNT.c.email
            accounts = set(
                conn.execute(select(ACCOUNT.c.account_id).where(column == hold.value)).scalars()
            )
            accounts.add(hold.account_id)
            already = set(
                conn.execute(
                    select(HOLD.c.account_id).where(
                        HOLD.c.account_id.in_(accounts),
                        HOLD.c.reason == hold.reason,
                        HOLD.c.channel == hold.channel,
                        HOLD.c.lifted_at.is_(None),
                    )
                ).scalars()
            )
            already.update(p["account_id"] for p in placed if p["reason"] == hold.reason)
            placed.extend(
                {
                    "account_id": account_id,
                    "reason": hold.reason,
                    "channel": hold.channel,
                    "scope": "account",
                    "starts_at": hold.at,
                    "ends_at": None,
                    "note": hold.note,
                    "source": hold.source,
                    "created_by": "system:sender",
                    "created_at": hold.at,
                }
                for account_id in sorted(accounts - already)
            )
        if not placed:
            return
        conn.execute(HOLD.insert(), placed)
        ask_review(conn, (str(p["account_id"]) for p in placed))
        self._audit(
            conn,
            [
                AuditEntry(
                    "hold_added",
                    "system:sender",
                    p["created_at"],  # type: ignore[arg-type]
                    str(p["account_id"]),
                    detail={
                        "reason": p["reason"],
                        "channel": p["channel"],
                        "source": p["source"],
                        "note": p["note"],
                    },
                )
                for p in placed
            ],
        )

    def stale_sends(self, claimed_before: datetime) -> list[StaleSend]:
        """Messages claimed (or last marked uncertain) before ``claimed_before`` and still
        ``sending``: the process delivering them died, or the provider never answered."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    MESSAGE.c.message_id,
                    MESSAGE.c.account_id,
                    MESSAGE.c.channel,
                    MESSAGE.c.attempts,
                    MESSAGE.c.recipient,
                    MESSAGE.c.body,
                    MESSAGE.c.updated_at,
                    MESSAGE.c.sent_at,
                )
                .where(
                    MESSAGE.c.status == MessageStatus.SENDING.value,
                    MESSAGE.c.updated_at < claimed_before,
                )
                .order_by(MESSAGE.c.updated_at, MESSAGE.c.message_id)
            ).all()
        return [
            StaleSend(
                r.message_id,
                r.account_id,
                _CHANNEL[r.channel],
                r.attempts,
                r.recipient or "",
                r.body or "",
                r.updated_at,
                r.sent_at,
            )
            for r in rows
        ]

    def provider_ids_to(self, recipient: str, excluding: str) -> frozenset[str]:
        """Provider ids recorded for other messages to ``recipient``: a lookup at the
        provider must not take one of those for the message it is looking for."""
        # Through the accounts with that phone or email (both indexed), not a scan of the
        # outbox by recipient.
        owners = select(ACCOUNT.c.account_id).where(
            or_(ACCOUNT.c.phone == recipient, ACCOUNT.c.email == recipient)
        )
        with self.engine.connect() as conn:
            return frozenset(
                conn.execute(
                    select(MESSAGE.c.provider_message_id).where(
                        MESSAGE.c.account_id.in_(owners),
                        MESSAGE.c.recipient == recipient,
                        MESSAGE.c.message_id != excluding,
                        MESSAGE.c.provider_message_id.is_not(None),
                    )
                ).scalars()
            )

    def settle_stale(
        self,
        message_id: str,
        updated_at: datetime,
        values: Mapping[str, object],
        audit: Iterable[AuditEntry],
    ) -> bool:
        """Record what reconciliation found, only if the message is still the stale
        ``sending`` row it looked at (another instance may have settled it meanwhile)."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(MESSAGE)
                .where(
                    MESSAGE.c.message_id == message_id,
                    MESSAGE.c.status == MessageStatus.SENDING.value,
                    MESSAGE.c.updated_at == updated_at,
                )
                .values(**values)
            ).rowcount
            if changed:
                self._audit(conn, audit)
        return bool(changed)

    def resolve_unknown(
        self, message_id: str, *, sent: bool, note: str, actor: str, now: datetime
    ) -> str:
        """A person settles a message of ``unknown`` outcome: it was sent (they checked
        the provider or the customer), or it goes again. Returns the account id."""
        with self.engine.begin() as conn:
            found = (
                conn.execute(select(MESSAGE).where(MESSAGE.c.message_id == message_id))
                .mappings()
                .first()
            )
            if found is None:
                raise InputError(f"no message {message_id!r}")
            if found["status"] != MessageStatus.UNKNOWN.value:
                raise InputError(
                    f"message {message_id} is {found['status']}, not unknown: only a message "
                    "of unknown outcome is resolved by hand"
                )
            values: dict[str, object] = {"updated_at": now}
            if sent:
                values.update(status=MessageStatus.SENT.value, sent_at=found["sent_at"] or now)
            else:
                values.update(status=MessageStatus.QUEUED.value, sent_at=None, next_attempt_at=None)
            conn.execute(update(MESSAGE).where(MESSAGE.c.message_id == message_id).values(**values))
            self._audit(
                conn,
                [
                    AuditEntry(
                        "message_resolved",
                        actor,
                        now,
                        found["account_id"],
                        message_id,
                        {"as": "sent" if sent else "resend", "note": note},
                    )
                ],
            )
        return str(found["account_id"])

    # -- service runs ---------------------------------------------------------------------
    def start_run(self, kind: str, instance: str, at: datetime) -> int:
        """Record that ``instance`` started a run of ``kind``; returns the run's id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                RUN.insert()
                .values(kind=kind, instance=instance, started_at=at, status="running", detail="{}")
                .returning(RUN.c.id)
            )
            return int(result.scalar_one())

    def finish_run(
        self, run_id: int, status: str, at: datetime, detail: Mapping[str, object]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(RUN)
                .where(RUN.c.id == run_id)
                .values(
                    status=status,
                    finished_at=at,
                    detail=json.dumps(detail, default=str, sort_keys=True),
                )
            )

    def last_finished(self, kind: str, status: str = "ok") -> RowMapping | None:
        """The latest run of ``kind`` that ended with ``status``, by any instance."""
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(RUN)
                    .where(RUN.c.kind == kind, RUN.c.status == status)
                    .order_by(RUN.c.finished_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )

    def expire_holds(self, now: datetime) -> int:
        """Close timed holds whose end has passed, each with an audit record.

        A hold past its end no longer holds anything (the policy checks ``ends_at``); this
        makes its end visible in the account's history and keeps the open-holds list short.
        """
        with self.engine.begin() as conn:
            ended = (
                conn.execute(
                    select(HOLD.c.id, HOLD.c.account_id, HOLD.c.reason, HOLD.c.ends_at).where(
                        HOLD.c.lifted_at.is_(None),
                        HOLD.c.ends_at.is_not(None),
                        HOLD.c.ends_at <= now,
                    )
                )
                .mappings()
                .all()
            )
            for hold in ended:
                conn.execute(
                    update(HOLD)
                    .where(HOLD.c.id == hold["id"], HOLD.c.lifted_at.is_(None))
                    .values(
                        lifted_at=hold["ends_at"],
                        lifted_by="system:expiry",
                        lift_note="hold period ended",
                    )
                )
            # The policy stopped counting each at its end already (a review was due then);
            # this is only in case a hold's end was moved.
            ask_person_review(conn, [h["account_id"] for h in ended])
            self._audit(
                conn,
                [
                    AuditEntry(
                        "hold_expired",
                        "system:housekeeping",
                        now,
                        h["account_id"],
                        detail={"hold_id": h["id"], "reason": h["reason"], "ended": h["ends_at"]},
                    )
                    for h in ended
                ],
            )
        return len(ended)

    def ping(self) -> None:
        """Raise StoreError unless the database answers (for /readyz)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except OperationalError as exc:
            raise StoreError(f"database unreachable: {exc.orig}") from None

    # -- reading --------------------------------------------------------------------------
    def messages_of(self, account_id: str) -> list[RowMapping]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(MESSAGE)
                    .where(MESSAGE.c.account_id == account_id)
                    .order_by(
                        MESSAGE.c.created_at, MESSAGE.c.cycle, MESSAGE.c.stage, MESSAGE.c.step
                    )
                ).mappings()
            )

    def audit_of(self, account_id: str) -> list[RowMapping]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(AUDIT).where(AUDIT.c.account_id == account_id).order_by(AUDIT.c.id)
                ).mappings()
            )

    def iter_messages(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RowMapping]:
        """Every message (holds included) changed in ``[since, until)``, oldest first,
        streamed."""
        query = select(MESSAGE).order_by(MESSAGE.c.created_at, MESSAGE.c.message_id)
        if since is not None:
            query = query.where(MESSAGE.c.updated_at >= since)
        if until is not None:
            query = query.where(MESSAGE.c.updated_at < until)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(query).mappings()
            yield from result

    def iter_audit(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[RowMapping]:
        """Every audit record written in ``[since, until)``, in order, streamed."""
        query = select(AUDIT).order_by(AUDIT.c.id)
        if since is not None:
            query = query.where(AUDIT.c.at >= since)
        if until is not None:
            query = query.where(AUDIT.c.at < until)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(query).mappings()
            yield from result

    def status_counts(self) -> list[tuple[str, str, str, str | None, int]]:
        """(stage, channel, status, hold_reason, count) over the whole outbox.

        No hold reason sorts first on both databases (PostgreSQL would put NULL last).
        """
        cols = (MESSAGE.c.stage, MESSAGE.c.channel, MESSAGE.c.status, MESSAGE.c.hold_reason)
        order = (*cols[:3], MESSAGE.c.hold_reason.asc().nulls_first())
        with self.engine.connect() as conn:
            return [
                (s, c, st, r, int(n))
                for s, c, st, r, n in conn.execute(
                    select(*cols, func.count()).group_by(*cols).order_by(*order)
                )
            ]

    def waiting(self, now: datetime) -> tuple[int, datetime | None]:
        """How many queued messages wait for a later instant, and the earliest of them."""
        later = and_(MESSAGE.c.status == MessageStatus.QUEUED.value, MESSAGE.c.scheduled_for > now)
        with self.engine.connect() as conn:
            count, earliest = conn.execute(
                select(func.count(), func.min(MESSAGE.c.scheduled_for)).where(later)
            ).one()
        if earliest is not None and earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=UTC)  # SQLite's min() bypasses the column type
        return int(count), earliest

    def count_accounts(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ACCOUNT)).scalar_one())

    def message_counts(self) -> list[tuple[str, str, int]]:
        """(channel, status, count) over the whole outbox, for the metrics' gauge.

        A pass over every row (about 0.5 s per million on SQLite): the metrics collector
        calls it every few minutes, not on every scrape.
        """
        cols = (MESSAGE.c.channel, MESSAGE.c.status)
        with self.engine.connect() as conn:
            return [
                (channel, status, int(n))
                for channel, status, n in conn.execute(select(*cols, func.count()).group_by(*cols))
            ]

    def pending_message_counts(self) -> list[tuple[str, str, str | None, int]]:
        """(channel, status, hold_reason, count) of held, queued and sending messages.

        Reads only those rows, through ``ix_message_due`` (which leads with status), so it
        costs the size of the backlog, not of the outbox: cheap enough for every scrape.
        """
        cols = (MESSAGE.c.channel, MESSAGE.c.status, MESSAGE.c.hold_reason)
        pending = (MessageStatus.HELD, MessageStatus.QUEUED, MessageStatus.SENDING)
        with self.engine.connect() as conn:
            return [
                (channel, status, reason, int(n))
                for channel, status, reason, n in conn.execute(
                    select(*cols, func.count())
                    .where(MESSAGE.c.status.in_([s.value for s in pending]))
                    .group_by(*cols)
                )
            ]

    def active_hold_counts(self, now: datetime) -> list[tuple[str, int]]:
        """(reason, count) of hold records in force at ``now``: started, not lifted and
        not ended. A pass over the hold table, which is small (a few per cent of accounts)."""
        in_force = and_(
            HOLD.c.lifted_at.is_(None),
            HOLD.c.starts_at <= now,
            or_(HOLD.c.ends_at.is_(None), HOLD.c.ends_at > now),
        )
        with self.engine.connect() as conn:
            return [
                (reason, int(n))
                for reason, n in conn.execute(
                    select(HOLD.c.reason, func.count()).where(in_force).group_by(HOLD.c.reason)
                )
            ]

    def due_backlog(self, now: datetime) -> list[tuple[str, str, int, datetime | None]]:
        """(channel, status, count, earliest due time) of messages whose time has come and
        that have not gone: queued ones a send run could claim at ``now`` (the condition
        of ``claim_due``) and sending ones in flight.

        Reads only those rows through ``ix_message_due`` (status, scheduled_for).
        """
        queued = and_(
            MESSAGE.c.status == MessageStatus.QUEUED.value,
            or_(MESSAGE.c.scheduled_for.is_(None), MESSAGE.c.scheduled_for <= now),
            or_(MESSAGE.c.next_attempt_at.is_(None), MESSAGE.c.next_attempt_at <= now),
        )
        sending = MESSAGE.c.status == MessageStatus.SENDING.value
        # A message without a scheduled time was due when it was written.
        due_at = func.min(func.coalesce(MESSAGE.c.scheduled_for, MESSAGE.c.created_at))
        found: list[tuple[str, str, int, datetime | None]] = []
        with self.engine.connect() as conn:
            for where in (queued, sending):
                for channel, status, n, earliest in conn.execute(
                    select(MESSAGE.c.channel, MESSAGE.c.status, func.count(), due_at)
                    .where(where)
                    .group_by(MESSAGE.c.channel, MESSAGE.c.status)
                ):
                    if isinstance(earliest, str):  # an aggregate may bypass the column type
                        earliest = datetime.fromisoformat(earliest)
                    if earliest is not None and earliest.tzinfo is None:
                        earliest = earliest.replace(tzinfo=UTC)
                    found.append((channel, status, int(n), earliest))
        return found

    # -- provider reports ------------------------------------------------------------
    @contextmanager
    def tracking(self, provider_message_id: str) -> Iterator[Tracked]:
        """The message the provider knows as ``provider_message_id``, locked for the
        transaction (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite), so two
        callbacks about one message are applied one after the other, never interleaved."""
        query = select(MESSAGE).where(MESSAGE.c.provider_message_id == provider_message_id)
        with self.engine.begin() as conn:
            if self._dialect == "postgresql":
                query = query.with_for_update()
            else:
                conn.exec_driver_sql("UPDATE message SET status = status WHERE 0")
            found = conn.execute(query.limit(1)).mappings().first()
            yield Tracked(self, conn, found)

    def accounts_with_phone(self, phone: str) -> list[str]:
        """Ids of every account whose phone is ``phone`` (E.164, as the importer stores it)."""
        with self.engine.connect() as conn:
            return sorted(
                conn.execute(select(ACCOUNT.c.account_id).where(ACCOUNT.c.phone == phone)).scalars()
            )

    def hold_phone(
        self,
        phone: str,
        reason: str,
        *,
        channel: str | None,
        scope: str,
        note: str,
        source: str,
        actor: str,
        now: datetime,
        audit: Iterable[AuditEntry] = (),
    ) -> list[tuple[str, int]]:
        """Place a hold on every account with ``phone`` that has no active hold of this
        reason and source yet (a repeated request places nothing twice); returns
        (account id, hold id) of those placed. Each is audited, with ``audit``, in one
        transaction."""
        with self.engine.begin() as conn:
            ids = conn.execute(select(ACCOUNT.c.account_id).where(ACCOUNT.c.phone == phone))
            already = {a for a, _ in conn.execute(_phone_holds(phone, reason, source))}
            placed: list[tuple[str, int]] = []
            for account_id in sorted(set(ids.scalars()) - already):
                hold_id = conn.execute(
                    HOLD.insert()
                    .values(
                        account_id=account_id,
                        reason=reason,
                        channel=channel,
                        scope=scope,
                        starts_at=now,
                        ends_at=None,
                        note=note,
                        source=source,
                        created_by=actor,
                        created_at=now,
                    )
                    .returning(HOLD.c.id)
                ).scalar_one()
                placed.append((account_id, int(hold_id)))
            ask_person_review(conn, [a for a, _ in placed])
            detail = {"reason": reason, "channel": channel, "scope": scope, "source": source}
            self._audit(
                conn, [*audit, *_hold_entries("hold_added", actor, now, placed, detail, note)]
            )
        return placed

    def lift_phone_holds(
        self,
        phone: str,
        reason: str,
        *,
        source: str,
        note: str,
        actor: str,
        now: datetime,
        audit: Iterable[AuditEntry] = (),
    ) -> list[tuple[str, int]]:
        """Lift the active holds of ``reason`` placed by ``source`` on accounts with
        ``phone`` (holds placed otherwise stay); returns (account id, hold id) lifted."""
        with self.engine.begin() as conn:
            found = [(str(a), int(h)) for a, h in conn.execute(_phone_holds(phone, reason, source))]
            if found:
                conn.execute(
                    update(HOLD)
                    .where(HOLD.c.id.in_([h for _, h in found]))
                    .values(lifted_at=now, lifted_by=actor, lift_note=note)
                )
                ask_person_review(conn, [a for a, _ in found])
            detail = {"reason": reason, "source": source}
            self._audit(
                conn, [*audit, *_hold_entries("hold_lifted", actor, now, found, detail, note)]
            )
        return found

    def audit(self, entries: Iterable[AuditEntry]) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, entries)

    @staticmethod
    def _audit(conn: Connection, entries: Iterable[AuditEntry]) -> None:
        rows = [entry.row() for entry in entries]
        if rows:
            conn.execute(AUDIT.insert(), rows)


# IN lists of at most this many values: far below every database's parameter limit.
_CHUNK = 2000


def ask_review(conn: Connection, account_ids: Iterable[str]) -> None:
    """Ask the planner to look at these accounts at its next plan: their data, holds or
    messages changed in a way that can alter their plan (docs/PLANNING.md, "Reviews").

    Bumping ``review_seq`` also keeps a plan that read an account before this change from
    recording a review made on the old data."""
    ids = sorted(set(account_ids))
    for start in range(0, len(ids), _CHUNK):
        conn.execute(
            update(ACCOUNT)
            .where(ACCOUNT.c.account_id.in_(ids[start : start + _CHUNK]))
            .values(review_key=None, review_seq=ACCOUNT.c.review_seq + 1)
        )


def ask_person_review(conn: Connection, account_ids: Iterable[str]) -> None:
    """:func:`ask_review` for these accounts and every account sharing a phone or email
    with one of them: a hold on one (person-scope, or one of unknown scope) reaches those."""
    ids = sorted(set(account_ids))
    contacts: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        for phone, email in conn.execute(
            select(ACCOUNT.c.phone, ACCOUNT.c.email).where(
                ACCOUNT.c.account_id.in_(ids[start : start + _CHUNK])
            )
        ):
            contacts.update(c for c in (phone, email) if c)
    ask_review(conn, ids)
    _ask_review_sharing(conn, contacts)


def _ask_review_sharing(conn: Connection, contacts: Collection[str]) -> None:
    """:func:`ask_review` for every account whose phone or email is one of ``contacts``."""
    values = sorted(contacts)
    bump = {"review_key": None, "review_seq": ACCOUNT.c.review_seq + 1}
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        # One indexed statement per column (an OR would scan the table).
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.phone.in_(chunk)).values(bump))
        conn.execute(update(ACCOUNT).where(ACCOUNT.c.email.in_(chunk)).values(bump))


def _sharing(conn: Connection, accounts: Sequence[Account]) -> Iterator[tuple[str, str]]:
    """(account id, the phone or email shared) of every account sharing a phone number or
    an email address with one of ``accounts`` (those included): the accounts of their
    persons. One query per column, each through its own index (an OR across the columns
    would scan every account, batch after batch)."""
    for column in (ACCOUNT.c.phone, ACCOUNT.c.email):
        values = {getattr(a, column.key) for a in accounts} - {None, ""}
        if values:
            yield from conn.execute(select(ACCOUNT.c.account_id, column).where(column.in_(values)))


def _insert_many(conn: Connection, statement: Any, rows: Sequence[Mapping[str, object]]) -> None:
    """Run the INSERT ``statement`` for ``rows`` (all with the keys of the first) as one
    DBAPI executemany on SQLite.

    Why not ``conn.execute(statement, rows)``: for each row of each batch SQLAlchemy builds
    its parameters anew, a third of a first plan's writing time on SQLite. The statement is
    compiled once by SQLAlchemy and the values pass through the same column types' bind
    processors (UTC datetimes and all), so the rows stored are the same; PostgreSQL keeps
    the Core path (its insertmanyvalues batches). A batch's timestamps are mostly one
    instant, so each processor's answers are kept for the batch.
    """
    table: Table = statement.table
    dialect = conn.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    order = list(compiled.positiontup or ())
    processed = []
    for i, name in enumerate(order):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processed.append((i, process, dict[object, object]()))
    if len(order) < 2:  # itemgetter of one key returns the value, not a tuple
        raise ValueError("_insert_many wants rows of two columns or more")
    values = operator.itemgetter(*order)
    params = []
    for row in rows:
        found = list(values(row))
        for i, process, seen in processed:
            value = found[i]
            try:
                found[i] = seen[value]
            except KeyError:
                found[i] = seen[value] = process(value)
            except TypeError:  # an unhashable value: processed, not kept
                found[i] = process(value)
        params.append(tuple(found))
    conn.exec_driver_sql(compiled.string, params)


def _hold_entries(
    event: str,
    actor: str,
    now: datetime,
    holds: Sequence[tuple[str, int]],
    detail: Mapping[str, object],
    note: str,
) -> list[AuditEntry]:
    """One audit record per (account id, hold id) of ``holds``."""
    return [
        AuditEntry(
            event, actor, now, account_id, detail={"hold_id": hold_id, **detail, "note": note}
        )
        for account_id, hold_id in holds
    ]


def _phone_holds(phone: str, reason: str, source: str) -> Any:
    """(account id, hold id) of the active holds of ``reason`` placed by ``source`` on the
    accounts with ``phone``, oldest first."""
    return (
        select(HOLD.c.account_id, HOLD.c.id)
        .join(ACCOUNT, ACCOUNT.c.account_id == HOLD.c.account_id)
        .where(
            ACCOUNT.c.phone == phone,
            HOLD.c.reason == reason,
            HOLD.c.source == source,
            HOLD.c.lifted_at.is_(None),
        )
        .order_by(HOLD.c.id)
    )


def _plannable(due_on_or_before: date, reviewing: Reviewing | None = None) -> ColumnElement[bool]:
    """Accounts the planner must look at: collectible and due by ``due_on_or_before``, or
    holding a pending message (a payment or a new cycle must end those); with
    ``reviewing``, only those due for review (tested first: it is the cheap test that
    leaves out most accounts of a re-plan).

    The pending test is a correlated EXISTS, probed through ``ix_message_account`` per
    account: as ``IN (SELECT ...)`` SQLite rebuilt the set of every pending message's
    account for each batch, and a plan's own queued messages grow that set, so a plan's
    reads grew with the square of the portfolio (10 s of reads at 100k accounts, 0.2 s so).
    """
    pending = (
        select(MESSAGE.c.account_id)
        .where(MESSAGE.c.account_id == ACCOUNT.c.account_id, MESSAGE.c.status.in_(PENDING))
        .exists()
    )
    wanted = or_(
        and_(
            ACCOUNT.c.status == AccountStatus.OPEN.value,
            ACCOUNT.c.balance_minor > 0,
            ACCOUNT.c.due_date <= due_on_or_before,
        ),
        pending,
    )
    if reviewing is None:
        return wanted
    # A change forgets the key (review_key NULL): looked at whatever review_at says. A
    # NULL review_at under the right key: nothing but a change can alter the plan.
    due = or_(
        ACCOUNT.c.review_key.is_distinct_from(reviewing.key),
        ACCOUNT.c.review_at <= reviewing.now,
    )
    return and_(due, wanted)


def to_account(row: RowMapping | Mapping[str, Any]) -> Account:
    """Map an account row to the core's Account."""
    address = None
    if row["address_line1"]:
        address = PostalAddress(
            line1=row["address_line1"],
            line2=row["address_line2"],
            city=row["city"],
            region=row["region"],
            postal_code=row["postal_code"],
            country=row["country"],
        )
    return Account(
        account_id=row["account_id"],
        full_name=row["full_name"],
        balance=from_minor(row["balance_minor"], row["currency"]),
        currency=row["currency"],
        due_date=row["due_date"],
        timezone=row["timezone"],
        locale=row["locale"],
        jurisdiction=row["jurisdiction"],
        status=_ACCOUNT_STATUS[row["status"]],
        cycle=row["cycle"],
        phone=row["phone"],
        email=row["email"],
        address=address,
        country=row["country"],
        region=row["region"],
        flags=frozenset(flag for column, flag in _FLAG_COLUMNS if row[column]),
        promise_to_pay_until=row["promise_to_pay_until"],
        assigned_to=row["assigned_to"],
        timezone_source=row["timezone_source"],
    )


def _claimed(row: RowMapping) -> ClaimedMessage:
    return ClaimedMessage(
        message_id=row["message_id"],
        account_id=row["account_id"],
        channel=_CHANNEL[row["channel"]],
        recipient=row["recipient"] or "",
        subject=row["subject"],
        body=row["body"] or "",
        body_html=row["body_html"],
        locale=row["locale"],
        attempts=row["attempts"],
        cycle=row["cycle"],
        stage=row["stage"],
        due_at=row["scheduled_for"] or row["created_at"],
    )


def person_lock_keys(accounts: Iterable[Account]) -> list[int]:
    """64-bit advisory-lock keys for every person of ``accounts`` (account, phone and
    email), sorted: locking in one global order means two workers never deadlock."""
    names = set()
    for account in accounts:
        names.add(f"account:{account.account_id}")
        if account.phone:
            names.add(f"phone:{account.phone}")
        if account.email:
            names.add(f"email:{account.email}")
    return sorted(
        int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big", signed=True) for n in names
    )


def _lock_persons(conn: Connection, accounts: Iterable[Account]) -> None:
    keys = person_lock_keys(accounts)
    # The ordered subquery makes the locks come in key order (no deadlock between workers).
    conn.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
        ),
        {"keys": keys},
    )
