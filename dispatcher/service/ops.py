"""What ops look at and do on the web: a local day's run, the outbox, failures, retry.

Read models over :class:`~dispatcher.store.ops.OpsStore` and the outbox reads the
metrics already make (:meth:`~dispatcher.store.sql.SqlStore.due_backlog`,
:meth:`~dispatcher.store.sql.SqlStore.pending_message_counts`), so the page and
``/metrics`` agree. Pure of the clock: every function takes ``now`` or the day.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dispatcher.domain.message import MessageStatus
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError
from dispatcher.store.ops import FailedMessage, OpsStore, RunCountRow
from dispatcher.store.sql import SqlStore

STATUSES = ("planned", "queued", "sent", "failed", "held")


@dataclass(frozen=True, slots=True)
class StageChannel:
    """One row of the run table: a stage and channel with the five counts."""

    stage: str
    channel: str
    planned: int = 0
    queued: int = 0
    sent: int = 0
    failed: int = 0
    held: int = 0


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """How many messages of a status (held, queued, failed) wait for one reason."""

    status: str
    channel: str
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """One channel's outbox now: due and not gone, in flight, waiting for later, held."""

    channel: str
    due: int
    sending: int
    later: int
    held: int
    oldest_due_age: timedelta | None  # from the oldest due message's due time to now


@dataclass
class DayRun:
    """A local day's run (docs/WEB.md, "Ops: today's run")."""

    day: date
    zone: str
    start: datetime
    end: datetime
    now: datetime
    rows: list[StageChannel] = field(default_factory=list)
    reasons: list[ReasonCount] = field(default_factory=list)
    outbox: list[OutboxDepth] = field(default_factory=list)
    failures: list[FailedMessage] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {s: sum(getattr(r, s) for r in self.rows) for s in STATUSES}


@dataclass(frozen=True, slots=True)
class HourSends:
    """Messages handed over in one UTC hour, per channel (zero hours included)."""

    hour: datetime
    by_channel: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of the local ``day``: 23 or 25 hours on a DST change."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        raise InputError(f"{name!r} is not an IANA time zone") from None


def day_run(store: SqlStore, ops: OpsStore, day: date, zone: ZoneInfo, now: datetime) -> DayRun:
    """Counts of the local ``day`` by stage and channel, the reasons behind held, deferred
    and failed messages, the outbox depth at ``now`` and the day's failures."""
    start, end = day_bounds(day, zone)
    run = DayRun(day=day, zone=str(zone), start=start, end=end, now=now)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
    reasons: dict[tuple[str, str, str], int] = defaultdict(int)
    row: RunCountRow
    for row in ops.day_counts(start, end):
        bucket = counts[(row.stage, row.channel)]
        for status in STATUSES:
            bucket[status] += getattr(row, status)
        if row.reason:
            for status in ("queued", "held", "failed"):
                n = getattr(row, status)
                if n:
                    reasons[(status, row.channel, row.reason)] += n
    run.rows = [StageChannel(stage, channel, **c) for (stage, channel), c in sorted(counts.items())]
    run.reasons = [
        ReasonCount(status, channel, reason, n)
        for (status, channel, reason), n in sorted(reasons.items(), key=lambda kv: -kv[1])
    ]
    run.outbox = outbox_depth(store, now)
    run.failures = ops.failures(start, end)
    return run


def outbox_depth(store: SqlStore, now: datetime) -> list[OutboxDepth]:
    """Per channel: due now and not gone, sending, queued for later, held, and the age
    of the oldest due one (what the ``dispatcher_outbox_*`` gauges say)."""
    due: dict[str, int] = defaultdict(int)
    sending: dict[str, int] = defaultdict(int)
    oldest: dict[str, datetime] = {}
    for channel, status, n, due_at in store.due_backlog(now):
        (sending if status == MessageStatus.SENDING.value else due)[channel] += n
        if due_at is not None and (channel not in oldest or due_at < oldest[channel]):
            oldest[channel] = due_at
    queued: dict[str, int] = defaultdict(int)
    held: dict[str, int] = defaultdict(int)
    for channel, status, _reason, n in store.pending_message_counts():
        if status == MessageStatus.QUEUED.value:
            queued[channel] += n
        elif status == MessageStatus.HELD.value:
            held[channel] += n
    return [
        OutboxDepth(
            channel=kind.value,
            due=due[kind.value],
            sending=sending[kind.value],
            later=max(0, queued[kind.value] - due[kind.value]),
            held=held[kind.value],
            oldest_due_age=max(timedelta(0), now - oldest[kind.value])
            if kind.value in oldest
            else None,
        )
        for kind in ChannelKind
    ]


def sends_per_hour(ops: OpsStore, now: datetime, days: int = 7) -> list[HourSends]:
    """Every UTC hour of the last ``days`` days up to ``now``'s hour, with its sends per
    channel (hours without sends are zeros, so a chart shows the gaps)."""
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = last - timedelta(hours=24 * days - 1)
    found: dict[datetime, dict[str, int]] = defaultdict(dict)
    for hour, channel, n in ops.sends_per_hour(first, last + timedelta(hours=1)):
        found[hour][channel] = found[hour].get(channel, 0) + n
    hours = [first + timedelta(hours=i) for i in range(24 * days)]
    return [
        HourSends(h, {kind.value: found.get(h, {}).get(kind.value, 0) for kind in ChannelKind})
        for h in hours
    ]


def retry_failed(ops: OpsStore, message_id: str, *, actor: str, note: str, now: datetime) -> str:
    """A person queues a failed message again (house rule HR-40); returns its account.

    The person is named (``actor``) and the reason kept (``note``, may be short but not
    empty): a retry is a decision to contact a customer once more.
    """
    if not actor.strip():
        raise InputError("a retry needs the name of the person who asks for it")
    if not note.strip():
        raise InputError("say why the message should go again (kept in the audit log)")
    return ops.requeue_failed(message_id, actor=actor.strip(), note=note.strip(), now=now)
