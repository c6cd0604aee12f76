"""Import accounts from the CSV contract: stream, validate, upsert in batches, reject loudly.

DESIGN.md, "Accounts CSV": bad rows never abort the file and never vanish; each goes to
the reject file next to the input with its line and reason; good rows land.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dispatcher.account_file import Parsed, RejectWriter, read_accounts
from dispatcher.store.sql import AuditEntry, SqlStore

ACTOR = "system:importer"


@dataclass
class ImportReport:
    path: Path
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    reject_path: Path | None = None
    first_rejects: tuple[str, ...] = ()


def import_accounts(
    store: SqlStore,
    path: Path,
    *,
    now: datetime,
    default_timezone: str,
    default_region: str | None,
    batch_size: int = 2000,
    workers: int = 1,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert every valid row of ``path`` by account_id; write rejects beside it.

    ``workers`` > 1 validates rows in that many processes (phone and email checks dominate
    the cost); rows still land in file order.
    """
    report = ImportReport(path=path)
    shown: list[str] = []
    batch: list[dict[str, object]] = []

    def flush() -> None:
        inserted, updated = store.upsert_accounts(batch, now)
        report.inserted += inserted
        report.updated += updated
        if on_progress is not None:
            on_progress(len(batch))
        batch.clear()

    with RejectWriter.for_input(path) as rejects:
        for item in read_accounts(
            path,
            default_timezone=default_timezone,
            default_region=default_region,
            workers=workers,
        ):
            report.rows += 1
            if isinstance(item, Parsed):
                batch.append(item.values)
                if len(batch) >= batch_size:
                    flush()
            else:
                rejects.write(item)
                if len(shown) < 20:
                    shown.append(f"line {item.line}: {item.reason}")
        if batch:
            flush()
        report.rejected = rejects.count
        report.reject_path = rejects.path if rejects.count else None
    report.first_rejects = tuple(shown)
    store.audit(
        [
            AuditEntry(
                event="accounts_imported",
                actor=ACTOR,
                at=now,
                detail={
                    "file": str(path),
                    "rows": report.rows,
                    "inserted": report.inserted,
                    "updated": report.updated,
                    "rejected": report.rejected,
                    "reject_file": str(report.reject_path) if report.reject_path else None,
                },
            )
        ]
    )
    return report
