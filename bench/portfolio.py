"""The benchmarks' portfolio: the generated one, with people's contact data made distinct."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

TODAY = date(2026, 6, 10)  # the plan benchmarks' NOW


def write_bench_portfolio(path: Path, accounts: int, *, today: date = TODAY, seed: int = 7) -> None:
    """The generated portfolio, streamed row by row to ``path``, each account its own person
    (own phone and email) except every 50th, which shares the previous one's: the
    generator's fiction-range US numbers would otherwise make thousands of accounts one
    "person" for the caps (about 2 % of people owe more than one debt here)."""
    from dispatcher.account_file import COLUMNS
    from dispatcher.portfolio import generate_portfolio

    rows = generate_portfolio(accounts, today=today, seed=seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        previous: dict[str, str] | None = None
        for i, row in enumerate(rows):
            same_country = previous is not None and previous["country"] == row["country"]
            source = previous if same_country and i % 50 == 0 else None
            if row["phone"] and "555" in row["phone"]:
                row["phone"] = source["phone"] if source else f"+1617{2_000_000 + i:07d}"
            if row["email"]:
                row["email"] = source["email"] if source else f"account{i}@example.com"
            writer.writerow(row)
            previous = row


def bench_settings(work: Path, database: str) -> Settings:
    """Settings for a benchmark run in ``work``: the repository's templates and config, a
    SQLite file ``database`` and the sinks and audit anchors inside ``work``."""
    from dispatcher.settings import AuditSettings, Settings, SinkSettings

    return Settings(
        database_url=f"sqlite:///{work / database}",
        templates_dir=ROOT / "templates",
        strategy_file=ROOT / "config" / "strategy.toml",
        policies_dir=ROOT / "config" / "policies",
        sinks=SinkSettings(directory=work / "sink"),
        audit=AuditSettings(anchor_file=work / "anchors.jsonl"),
    )
