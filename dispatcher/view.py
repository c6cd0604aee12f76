"""How reports look to people (rich tables) and to programs (plain dicts for JSON)."""

from __future__ import annotations

from rich.table import Table

from dispatcher.service.importer import ImportReport
from dispatcher.service.planner import PlanReport
from dispatcher.service.sender import SendReport


def plan_table(report: PlanReport) -> Table:
    dry = " (dry run: nothing written)" if report.dry_run else ""
    table = Table(
        "stage",
        "channel",
        "decision",
        "count",
        title=f"plan at {report.now.isoformat(timespec='seconds')}{dry}",
    )
    for (stage, channel, outcome), n in sorted(report.counts.items()):
        table.add_row(stage, channel, outcome, str(n))
    table.add_section()
    table.add_row("", "", f"{report.accounts} accounts looked at", str(report.total))
    return table


def send_table(report: SendReport) -> Table:
    table = Table(
        "channel", "outcome", "count", title=f"send at {report.now.isoformat(timespec='seconds')}"
    )
    for (channel, outcome), n in sorted(report.counts.items()):
        table.add_row(channel, outcome, str(n))
    table.add_section()
    table.add_row("", "total", str(report.total))
    return table


def import_lines(report: ImportReport) -> list[str]:
    """The import summary, then each of the first rejects, then where the rest went."""
    lines = [
        f"{report.path}: {report.rows} rows, {report.inserted} new, "
        f"{report.updated} updated, {report.rejected} rejected"
    ]
    lines += [f"  rejected {line}" for line in report.first_rejects]
    if report.reject_path:
        lines.append(f"rejected rows written to {report.reject_path}")
    return lines


def plan_dict(report: PlanReport) -> dict[str, object]:
    return {
        "now": report.now.isoformat(),
        "dry_run": report.dry_run,
        "accounts": report.accounts,
        "decisions": [
            {"stage": s, "channel": c, "outcome": o, "count": n}
            for (s, c, o), n in sorted(report.counts.items())
        ],
    }


def send_dict(report: SendReport) -> dict[str, object]:
    return {
        "now": report.now.isoformat(),
        "outcomes": [
            {"channel": c, "outcome": o, "count": n} for (c, o), n in sorted(report.counts.items())
        ],
    }


def import_dict(report: ImportReport) -> dict[str, object]:
    return {
        "file": str(report.path),
        "rows": report.rows,
        "inserted": report.inserted,
        "updated": report.updated,
        "rejected": report.rejected,
        "reject_file": str(report.reject_path) if report.reject_path else None,
    }
