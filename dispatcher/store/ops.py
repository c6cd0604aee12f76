"""Reads for the ops pages (a day's run, failures, sends per hour) and the retry of a failure.

Kept beside :class:`~dispatcher.store.sql.SqlStore` (same engine, same tables) so the
outbox store stays about planning and sending. The grouped reads are one pass over the
message table (about half a second per million rows on SQLite): an ops page, not a
scrape. Hour buckets are computed by the database, in UTC, so seven days of sends come
back as at most 168 x 3 rows whatever the volume; the expression differs per dialect.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from dispatcher.domain.message import NOT_DELIVERED, WENT_OUT, MessageStatus
from dispatcher.error import InputError
from dispatcher.store.sql import AUDIT, MESSAGE, AuditEntry, SqlStore

REQUEUED_EVENT = "message_requeued"


@dataclass(frozen=True, slots=True)
class RunCountRow:
    """Messages of one (stage, channel, reason) in a day's run, by what became of them."""

    stage: str
    channel: str
    reason: str | None
    planned: int
    queued: int
    sent: int
    failed: int
    held: int


class FailureKind(StrEnum):
    """Why a message is on the ops failures list."""

    FAILED = "failed"  # we gave up on it (permanent answer, or attempts exhausted)
    UNDELIVERED = "undelivered"  # handed over, then the provider reported it undelivered

    @property
    def label(self) -> str:
        """How the ops page names the kind."""
        if self is FailureKind.UNDELIVERED:
            return "undelivered (reported by the provider)"
        return "failed"


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """A message that did not reach the customer, with what the provider said.

    ``kind`` tells the two apart: ``failed`` (status ``failed``: ``failed_at`` is when we
    gave up, ``code`` the one the sender recorded) or ``undelivered`` (status still
    ``sent``, a provider status callback said ``undelivered``/``failed``: ``failed_at`` is
    when that report was recorded, ``code`` the provider's error code from it,
    ``delivery_status`` its word, ``last_error`` empty: an earlier retried error of the
    hand-over says nothing about why it was not delivered).
    """

    message_id: str
    account_id: str
    stage: str
    step: str
    channel: str
    attempts: int
    failed_at: datetime
    last_error: str | None
    code: str | None  # the provider's own code (see the class doc for where it comes from)
    hold_reason: str | None
    kind: FailureKind = FailureKind.FAILED
    delivery_status: str | None = None  # the provider's last word on delivery, if any
    sent_at: datetime | None = None  # when it was handed over, if it was

    @property
    def retryable(self) -> bool:
        """Only a ``failed`` message is queued again by hand (HR-40): an undelivered one
        went out, counts against the caps, and is not ours to send twice from here."""
        return self.kind is FailureKind.FAILED


def _failed_message(row: Any, **kind: Any) -> FailedMessage:
    """A failures-list entry from a row of :meth:`OpsStore.failures`; ``kind`` carries
    what differs between a failed and an undelivered message."""
    return FailedMessage(
        message_id=row["message_id"],
        account_id=row["account_id"],
        stage=row["stage"],
        step=row["step"],
        channel=row["channel"],
        attempts=int(row["attempts"]),
        failed_at=row["at"],
        hold_reason=row["hold_reason"],
        sent_at=row["sent_at"],
        **kind,
    )


def _aware(value: Any) -> datetime:
    """A datetime from an aggregate (which bypasses the column type): aware, UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _between(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


class OpsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    def day_counts(self, start: datetime, end: datetime) -> list[RunCountRow]:
        """The run of ``[start, end)`` by stage, channel and reason (docs/WEB.md, "Ops"):

        planned: decided in the period (created), whatever became of them; queued: waiting
        now and due before its end; sent: handed over (or to the print house) in it;
        failed: failed for good in it; held: held now, decided before its end.
        """
        m = MESSAGE.c
        planned = _between(m.created_at, start, end)
        queued = and_(
            m.status == MessageStatus.QUEUED.value,
            or_(m.scheduled_for < end, and_(m.scheduled_for.is_(None), m.created_at < end)),
        )
        sent = and_(m.status.in_([s.value for s in WENT_OUT]), _between(m.sent_at, start, end))
        failed = and_(m.status == MessageStatus.FAILED.value, _between(m.updated_at, start, end))
        held = and_(m.status == MessageStatus.HELD.value, m.created_at < end)
        conditions = (planned, queued, sent, failed, held)
        sums = [func.sum(case((c, 1), else_=0)) for c in conditions]
        groups = (m.stage, m.channel, m.hold_reason)
        query = select(*groups, *sums).where(or_(*conditions)).group_by(*groups)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return sorted(
            (
                RunCountRow(stage, channel, reason, *(int(n or 0) for n in counts))
                for stage, channel, reason, *counts in rows
            ),
            key=lambda r: (r.stage, r.channel, r.reason or ""),
        )

    def failures(self, start: datetime, end: datetime, limit: int = 200) -> list[FailedMessage]:
        """Messages that did not reach the customer in ``[start, end)``, newest first, at
        most ``limit``: those that failed for good (when we gave up; the provider's code as
        the sender recorded it, in the ``message_failed`` audit record) and those handed
        over that the provider later reported undelivered (when the report came; its error
        code). A message is one or the other: a re-queued or failed one is no longer
        ``sent``, so it is never listed twice."""
        m = MESSAGE.c
        columns = (
            m.message_id,
            m.account_id,
            m.stage,
            m.step,
            m.channel,
            m.attempts,
            m.last_error,
            m.hold_reason,
            m.sent_at,
        )
        failed = (
            select(*columns, m.updated_at.label("at"))
            .where(m.status == MessageStatus.FAILED.value, _between(m.updated_at, start, end))
            .order_by(m.updated_at.desc(), m.message_id)
            .limit(limit)
        )
        # The status filter goes first: ix_message_due starts with it. Every ``sent`` row
        # of the table is still read (no index on the delivery columns), one pass like the
        # day's counts above.
        undelivered = (
            select(*columns, m.delivery_updated_at.label("at"), m.delivery_status, m.delivery_error)
            .where(
                m.status.in_([s.value for s in WENT_OUT]),
                m.delivery_status.in_(sorted(NOT_DELIVERED)),
                _between(m.delivery_updated_at, start, end),
            )
            .order_by(m.delivery_updated_at.desc(), m.message_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            failed_rows = conn.execute(failed).mappings().all()
            undelivered_rows = conn.execute(undelivered).mappings().all()
            codes = self._failure_codes(
                conn, [(r["account_id"], r["message_id"]) for r in failed_rows]
            )
        found = [
            _failed_message(r, last_error=r["last_error"], code=codes.get(r["message_id"]))
            for r in failed_rows
        ]
        found += [
            _failed_message(
                r,
                last_error=None,
                code=r["delivery_error"],
                kind=FailureKind.UNDELIVERED,
                delivery_status=r["delivery_status"],
            )
            for r in undelivered_rows
        ]
        found.sort(key=lambda f: f.message_id)
        found.sort(key=lambda f: f.failed_at, reverse=True)
        return found[:limit]

    @staticmethod
    def _failure_codes(conn: Any, messages: Sequence[tuple[str, str]]) -> dict[str, str | None]:
        """The provider's code of each (account, message) failed for good, from its
        ``message_failed`` record; found by account (ix_audit_account), the only index of
        the audit table that leads to a message's records."""
        found: dict[str, str | None] = {}
        for start in range(0, len(messages), 500):
            chunk = messages[start : start + 500]
            for message_id, detail in conn.execute(
                select(AUDIT.c.message_id, AUDIT.c.detail)
                .where(
                    AUDIT.c.account_id.in_(sorted({account for account, _ in chunk})),
                    AUDIT.c.message_id.in_([message for _, message in chunk]),
                    AUDIT.c.event == "message_failed",
                )
                .order_by(AUDIT.c.id)
            ):
                try:
                    code = json.loads(detail).get("code")
                except (ValueError, AttributeError):
                    code = None  # a purged or damaged detail: the error text still shows
                found[message_id] = None if code is None else str(code)
        return found

    def sends_per_hour(self, start: datetime, end: datetime) -> list[tuple[datetime, str, int]]:
        """(UTC hour, channel, messages handed over) for every hour of ``[start, end)``
        that had any, oldest first."""
        m = MESSAGE.c
        hour: Any
        if self._dialect == "postgresql":
            hour = func.date_trunc("hour", func.timezone("UTC", m.sent_at))
        else:  # SQLite keeps UTC text: 'YYYY-MM-DD HH:MM:SS[.ffffff]'
            hour = func.strftime("%Y-%m-%d %H:00:00", m.sent_at)
        query = (
            select(hour.label("hour"), m.channel, func.count())
            .where(m.status.in_([s.value for s in WENT_OUT]), _between(m.sent_at, start, end))
            .group_by(hour, m.channel)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return sorted((_aware(h), channel, int(n)) for h, channel, n in rows)

    def requeue_failed(self, message_id: str, *, actor: str, note: str, now: datetime) -> str:
        """Put a failed message back in the queue for one more attempt; returns its account.

        Only a ``failed`` message (never one that went out, or whose outcome is unknown:
        those could reach the customer twice), conditionally, so two people pressing retry
        queue it once. The sender checks holds, window, caps and stage again before it goes.
        Audited with who did it and why (house rule HR-40).
        """
        with self.engine.begin() as conn:
            found = (
                conn.execute(
                    select(
                        MESSAGE.c.account_id,
                        MESSAGE.c.status,
                        MESSAGE.c.attempts,
                        MESSAGE.c.last_error,
                    ).where(MESSAGE.c.message_id == message_id)
                )
                .mappings()
                .first()
            )
            if found is None:
                raise InputError(f"no message {message_id!r}")
            moved = conn.execute(
                update(MESSAGE)
                .where(
                    MESSAGE.c.message_id == message_id,
                    MESSAGE.c.status == MessageStatus.FAILED.value,
                )
                .values(
                    status=MessageStatus.QUEUED.value,
                    next_attempt_at=None,
                    sent_at=None,
                    updated_at=now,
                )
            ).rowcount
            if moved != 1:
                raise InputError(
                    f"message {message_id} is {found['status']}, not failed: only a failed "
                    "message is queued again by hand"
                )
            SqlStore._audit(
                conn,
                [
                    AuditEntry(
                        REQUEUED_EVENT,
                        actor,
                        now,
                        found["account_id"],
                        message_id,
                        {
                            "note": note,
                            "attempts": found["attempts"],
                            "last_error": found["last_error"],
                        },
                    )
                ],
            )
        return str(found["account_id"])
