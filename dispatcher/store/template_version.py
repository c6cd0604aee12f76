"""The template version catalog in the database: every wording, its author, state, approver.

Kept beside :class:`~dispatcher.store.sql.SqlStore` (same engine, same audit table) so the
outbox store stays about messages. Every change of state is one transaction with its
audit records; approving retires the version it replaces in that same transaction, and a
partial unique index lets the database itself refuse two approved versions of a template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState
from dispatcher.error import StoreError
from dispatcher.store.sql import AuditEntry, SqlStore
from dispatcher.store.table import TemplateVersionRow

TEMPLATE_VERSION: Table = TemplateVersionRow.__table__  # type: ignore[attr-defined]

TemplateKey = tuple[ChannelKind, str, str]
"""(channel, template id, locale): what one approved version is chosen by."""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One row of ``template_version``."""

    id: int
    channel: ChannelKind
    template_id: str
    locale: str
    sha256: str
    label: str
    source: str
    source_html: str | None
    author: str
    created_at: datetime
    state: VersionState
    approved_by: str | None
    approved_at: datetime | None
    rejected_by: str | None
    rejected_at: datetime | None
    retired_by: str | None
    retired_at: datetime | None
    note: str | None
    retire_note: str | None

    @property
    def key(self) -> TemplateKey:
        return (self.channel, self.template_id, self.locale)

    def describe(self) -> str:
        """``sms early_day1 en-US @1a2b3c4d5e6f``: how messages and refusals name it."""
        return f"{self.channel} {self.template_id} {self.locale} @{self.sha256[:12]}"


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to register (draft, or approved by the bootstrap)."""

    channel: ChannelKind
    template_id: str
    locale: str
    sha256: str
    label: str
    source: str
    source_html: str | None
    author: str
    state: VersionState = VersionState.DRAFT
    approved_by: str | None = None
    note: str | None = None

    @property
    def key(self) -> TemplateKey:
        return (self.channel, self.template_id, self.locale)


class StateChanged(StoreError):
    """The version's state changed under us (another person acted first); nothing written."""


def _record(row: RowMapping) -> VersionRecord:
    values: dict[str, Any] = dict(row)
    values["channel"] = ChannelKind(values["channel"])
    values["state"] = VersionState(values["state"])
    return VersionRecord(**values)


class TemplateVersionStore:
    """Reads and writes ``template_version`` on the application's engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    def _insert(self) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(
            TEMPLATE_VERSION
        )

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(TEMPLATE_VERSION)).scalar_one()
            )

    def versions(
        self,
        channel: ChannelKind | None = None,
        template_id: str | None = None,
        locale: str | None = None,
    ) -> list[VersionRecord]:
        """Versions, by template and then oldest first."""
        query = select(TEMPLATE_VERSION).order_by(
            TEMPLATE_VERSION.c.channel,
            TEMPLATE_VERSION.c.template_id,
            TEMPLATE_VERSION.c.locale,
            TEMPLATE_VERSION.c.created_at,
            TEMPLATE_VERSION.c.id,
        )
        if channel is not None:
            query = query.where(TEMPLATE_VERSION.c.channel == channel.value)
        if template_id is not None:
            query = query.where(TEMPLATE_VERSION.c.template_id == template_id)
        if locale is not None:
            query = query.where(TEMPLATE_VERSION.c.locale == locale)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def approved_hashes(self) -> list[tuple[TemplateKey, str]]:
        """(key, sha256) of every approved version: what a plan sends, without the sources.

        Cheap (one small query), so the planner can tell at every run whether the set it
        compiled last time is still the approved one.
        """
        columns = (
            TEMPLATE_VERSION.c.channel,
            TEMPLATE_VERSION.c.template_id,
            TEMPLATE_VERSION.c.locale,
            TEMPLATE_VERSION.c.sha256,
        )
        query = select(*columns).where(TEMPLATE_VERSION.c.state == VersionState.APPROVED.value)
        with self.engine.connect() as conn:
            return sorted(((ChannelKind(c), t, loc), sha) for c, t, loc, sha in conn.execute(query))

    def approved(self) -> list[VersionRecord]:
        with self.engine.connect() as conn:
            query = select(TEMPLATE_VERSION).where(
                TEMPLATE_VERSION.c.state == VersionState.APPROVED.value
            )
            return [_record(r) for r in conn.execute(query).mappings()]

    def known_templates(self) -> set[tuple[ChannelKind, str]]:
        """(channel, template id) of every template with any version, in any state."""
        query = select(TEMPLATE_VERSION.c.channel, TEMPLATE_VERSION.c.template_id).distinct()
        with self.engine.connect() as conn:
            return {(ChannelKind(c), t) for c, t in conn.execute(query)}

    # -- writing --------------------------------------------------------------------------
    def register(
        self, versions: Sequence[NewVersion], now: datetime, audit: Iterable[AuditEntry] = ()
    ) -> list[VersionRecord]:
        """Insert versions not yet known (by key and hash); returns those inserted.

        A version some other process registered first is skipped, not an error: two
        services starting together register each wording once.
        """
        inserted: list[VersionRecord] = []
        with self.engine.begin() as conn:
            for version in versions:
                values = {
                    "channel": version.channel.value,
                    "template_id": version.template_id,
                    "locale": version.locale,
                    "sha256": version.sha256,
                    "label": version.label,
                    "source": version.source,
                    "source_html": version.source_html,
                    "author": version.author,
                    "created_at": now,
                    "state": version.state.value,
                    "approved_by": version.approved_by,
                    "approved_at": now if version.state is VersionState.APPROVED else None,
                    "note": version.note,
                }
                row = (
                    conn.execute(
                        self._insert()
                        .values(**values)
                        .on_conflict_do_nothing()
                        .returning(*TEMPLATE_VERSION.c)
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    inserted.append(_record(row))
            SqlStore._audit(conn, audit)
        return inserted

    def approve(
        self,
        version: VersionRecord,
        *,
        approver: str,
        note: str | None,
        now: datetime,
        audit: Callable[[VersionRecord | None], Sequence[AuditEntry]],
    ) -> VersionRecord | None:
        """Approve a draft and retire the approved version of its template, at once.

        Returns the version retired (None when there was none); ``audit`` makes the audit
        records, knowing it. Raises StateChanged when the draft is no longer a draft, or
        another version of the template was approved meanwhile; then nothing is written.
        """
        try:
            with self.engine.begin() as conn:
                self._lock(conn, version.id)
                retired = self._retire_approved(
                    conn,
                    version.key,
                    by=approver,
                    now=now,
                    note=f"replaced by @{version.sha256[:12]}",
                )
                self._move(
                    conn,
                    version,
                    VersionState.DRAFT,
                    state=VersionState.APPROVED.value,
                    approved_by=approver,
                    approved_at=now,
                    note=note,
                )
                SqlStore._audit(conn, audit(retired))
                return retired
        except IntegrityError:
            # The partial unique index: another approval of this template won the race.
            raise StateChanged(
                f"another version of {version.channel} {version.template_id} "
                f"{version.locale} was approved meanwhile; look again with `templates versions`"
            ) from None

    def reject(
        self,
        version: VersionRecord,
        *,
        who: str,
        note: str,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> None:
        """Mark a draft rejected, with the reason; StateChanged when it is no longer a draft."""
        self._change(
            version,
            VersionState.DRAFT,
            audit,
            state=VersionState.REJECTED.value,
            rejected_by=who,
            rejected_at=now,
            note=note,
        )

    def retire(
        self,
        version: VersionRecord,
        *,
        who: str,
        note: str,
        now: datetime,
        audit: Sequence[AuditEntry],
    ) -> None:
        """Retire an approved version without a successor: its template stops being sent."""
        self._change(
            version,
            VersionState.APPROVED,
            audit,
            state=VersionState.RETIRED.value,
            retired_by=who,
            retired_at=now,
            retire_note=note,
        )

    def _change(
        self,
        version: VersionRecord,
        expected: VersionState,
        audit: Sequence[AuditEntry],
        **values: object,
    ) -> None:
        """Move ``version`` out of ``expected`` and audit it, in one locked transaction."""
        with self.engine.begin() as conn:
            self._lock(conn, version.id)
            self._move(conn, version, expected, **values)
            SqlStore._audit(conn, audit)

    def _lock(self, conn: Connection, version_id: int) -> None:
        """On PostgreSQL, lock the row so two approvers of one draft queue up."""
        if self._dialect == "postgresql":
            conn.execute(
                select(TEMPLATE_VERSION.c.id)
                .where(TEMPLATE_VERSION.c.id == version_id)
                .with_for_update()
            )

    @staticmethod
    def _move(
        conn: Connection, version: VersionRecord, expected: VersionState, **values: object
    ) -> None:
        moved = conn.execute(
            update(TEMPLATE_VERSION)
            .where(
                TEMPLATE_VERSION.c.id == version.id,
                TEMPLATE_VERSION.c.state == expected.value,
            )
            .values(**values)
        ).rowcount
        if moved != 1:
            raise StateChanged(
                f"{version.describe()} is no longer {expected}: someone acted on it meanwhile; "
                "look again with `templates versions`"
            )

    @staticmethod
    def _retire_approved(
        conn: Connection, key: TemplateKey, *, by: str, now: datetime, note: str
    ) -> VersionRecord | None:
        channel, template_id, locale = key
        current = (
            conn.execute(
                select(TEMPLATE_VERSION).where(
                    TEMPLATE_VERSION.c.channel == channel.value,
                    TEMPLATE_VERSION.c.template_id == template_id,
                    TEMPLATE_VERSION.c.locale == locale,
                    TEMPLATE_VERSION.c.state == VersionState.APPROVED.value,
                )
            )
            .mappings()
            .first()
        )
        if current is None:
            return None
        conn.execute(
            update(TEMPLATE_VERSION)
            .where(
                TEMPLATE_VERSION.c.id == current["id"],
                TEMPLATE_VERSION.c.state == VersionState.APPROVED.value,
            )
            .values(
                state=VersionState.RETIRED.value,
                retired_by=by,
                retired_at=now,
                retire_note=note,
            )
        )
        return _record(current)
