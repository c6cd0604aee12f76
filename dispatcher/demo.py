"""``dispatcher demo``: a sample portfolio through the whole path, with local file sinks.

What a new user runs first: it creates the database, writes a realistic portfolio CSV
(with two deliberately broken rows, to show the reject file), imports it, plans, sends to
the file sinks and shows what happened and where to look.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from datetime import datetime
from pathlib import Path

from rich.console import Console

from dispatcher import view
from dispatcher.bootstrap import App
from dispatcher.domain.staging import local_date
from dispatcher.portfolio import write_portfolio
from dispatcher.service import audit_log
from dispatcher.service.importer import import_accounts


def _add_broken_rows(path: Path) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writerow(
            {
                "account_id": "DEMO-BAD-1",
                "full_name": "Broken Date",
                "balance": "120.00",
                "currency": "USD",
                "due_date": "2026-02-30",
            }
        )
        writer.writerow(
            {
                "account_id": "DEMO-BAD-2",
                "full_name": "Broken Phone",
                "balance": "75.10",
                "currency": "USD",
                "due_date": "2026-01-15",
                "phone": "12",
                "country": "US",
            }
        )


def run_demo(app: App, *, accounts: int, now: datetime, console: Console) -> None:
    app.store.create_schema()
    demo_dir = Path("var/demo")
    demo_dir.mkdir(parents=True, exist_ok=True)
    csv_path = demo_dir / "accounts.csv"
    write_portfolio(csv_path, accounts, today=local_date(now, app.settings.default_timezone))
    _add_broken_rows(csv_path)

    imported = import_accounts(
        app.store,
        csv_path,
        now=now,
        default_timezone=app.settings.default_timezone,
        default_region=app.settings.default_region,
    )
    console.rule("1. import")
    for line in view.import_lines(imported):
        console.print(line, markup=False, highlight=False)

    planned = app.planner(now).plan(now)
    console.rule(f"2. plan at {now.isoformat(timespec='seconds')}")
    console.print(view.plan_table(planned))

    sent = asyncio.run(app.sender().send(now))
    console.rule("3. send (local file sinks)")
    by_channel: Counter[str] = Counter()
    for (channel, outcome), n in sent.counts.items():
        by_channel[f"{channel}: {outcome}"] += n
    for label, n in sorted(by_channel.items()):
        console.print(f"  {label}  {n}")
    waiting, earliest = app.store.waiting(now)
    if waiting and earliest is not None:
        console.print(
            f"  {waiting} more wait for their contact window or holiday to end; the first "
            f"may go at {earliest.isoformat(timespec='minutes')} "
            f"(dispatcher send --now {earliest.isoformat(timespec='minutes')})"
        )
    sink = app.settings.sinks.directory
    console.print(f"  files in {sink}/sms (.txt), {sink}/email (.eml), {sink}/letter (.pdf)")

    console.rule("4. what one customer received")
    sample = next(
        (m for m in app.store.iter_messages() if m["status"] == "sent" and m["channel"] == "sms"),
        None,
    )
    if sample is not None:
        console.print(
            f"account {sample['account_id']} · {sample['stage']}/{sample['step']} "
            f"· template {sample['template_id']} @{str(sample['template_version'])[:12]}"
        )
        console.print(sample["body"], markup=False, highlight=False)
        console.print(f"\nfull history: dispatcher history {sample['account_id']}")
    if planned.total == 0 and sent.total == 0:
        console.print(
            "nothing new was due: this portfolio was already planned and sent "
            "(plans are idempotent). Delete var/ to start over."
        )
    console.print("export for auditors: dispatcher export messages --format jsonl")
    sealed = audit_log.seal(app.audit_chain, app.anchors, anchor=True)
    if sealed.head is not None:
        console.print(
            f"audit chain: {sealed.head.seq} records sealed, head anchored in "
            f"{app.anchors.path} (check it: dispatcher audit verify)"
        )
