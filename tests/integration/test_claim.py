"""Several senders on one database: each message goes once and no cap is exceeded by
two workers together (claims with SKIP LOCKED and per-person locks on PostgreSQL, the
write lock on SQLite)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

from dispatcher.bootstrap import App
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.service.sender import Sender, SendReport
from dispatcher.store.sql import Claim, ClaimedMessage
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

PAIRS = 12
WORKERS = 4


class SlowSender(Sender):
    """A sender that lingers in its claiming transaction after deciding, as a busy worker
    on a loaded database may: the window in which another worker could decide about the
    same person on stale data, unless the claim locks the person."""

    def _vet(self, claim: Claim, report: SendReport) -> list[ClaimedMessage]:
        ready = super()._vet(claim, report)
        time.sleep(0.05)
        return ready


def senders(app: App, n: int) -> list[Sender]:
    """``n`` independent senders, one message per claim, as separate workers would be."""
    built = []
    for _ in range(n):
        sender = app.sender()
        sender.__class__ = SlowSender
        sender.batch_size = 1
        built.append(sender)
    return built


def run_together(workers: list[Sender]) -> None:
    start = threading.Barrier(len(workers))

    def work(sender: Sender) -> None:
        start.wait()
        asyncio.run(sender.send(NOW))

    threads = [threading.Thread(target=work, args=(s,)) for s in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def test_concurrent_workers_send_each_message_once(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(
        app, tmp_path, [row(f"A-{i:03d}", days_ago(1), phone=f"+161755{i:05d}") for i in range(40)]
    )
    app.planner().plan(NOW)
    run_together(senders(app, WORKERS))
    sent = [m.message_id for m in channels[ChannelKind.SMS].delivered]
    assert len(sent) == 40 and len(set(sent)) == 40
    assert Counter(m["status"] for m in messages(app)) == Counter({"sent": 40})


def test_two_workers_together_never_exceed_a_persons_cap(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    # Planned while each account was its own person: every SMS queued for now.
    first = [row(f"P{i:02d}-a", days_ago(1), phone=f"+1617556{i:04d}") for i in range(PAIRS)]
    second = [row(f"P{i:02d}-b", days_ago(1), phone=f"+1617557{i:04d}") for i in range(PAIRS)]
    load(app, tmp_path, first + second)
    app.planner().plan(NOW)
    # Then an import says each pair is one person (same phone): one SMS a day between them.
    merged = [row(f"P{i:02d}-b", days_ago(1), phone=f"+1617556{i:04d}") for i in range(PAIRS)]
    load(app, tmp_path, merged, name="merged.csv")
    run_together(senders(app, WORKERS))
    per_person = Counter(m.account_id[:3] for m in channels[ChannelKind.SMS].delivered)
    assert len(per_person) == PAIRS
    assert set(per_person.values()) == {1}, per_person
    waiting = [m for m in messages(app) if m["status"] == "queued"]
    assert len(waiting) == PAIRS
    assert {m["hold_reason"] for m in waiting} == {"cap_sms_1d"}
