"""How reports look to people (rich tables) and to programs (plain dicts for JSON)."""

from __future__ import annotations

from rich.table import Table

from dispatcher.service.explainer import Explanation
from dispatcher.service.importer import ImportReport
from dispatcher.service.planner import PlanReport
from dispatcher.service.sender import SendReport
from dispatcher.service.simulator import Simulation


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


def explanation_lines(story: Explanation) -> list[str]:
    a = story.account
    where = ", ".join(story.zones)
    return [
        f"{a.account_id}  {a.full_name}  {a.balance} {a.currency}  due {a.due_date}  "
        f"cycle {a.cycle}  status {a.status.value}",
        f"at {story.now.isoformat(timespec='minutes')}: {story.dpd} days past due → stage "
        f"{story.stage or '(none)'}; zones {where}; packs {' → '.join(story.packs)}",
    ]


def explanation_steps(story: Explanation) -> list[str]:
    """One line per due step: what happened or would, why, by which rule and source."""
    lines = []
    for s in story.steps:
        line = f"{s.stage}/{s.step} {s.channel} (due at DPD {s.due_dpd}): {s.outcome}"
        if s.reason:
            line += f" — {s.reason}"
        if s.at:
            line += f", {s.at.isoformat(timespec='minutes')}"
        if s.rule_id:
            line += f"\n    rule {s.rule_id}: {s.source or '(source unknown)'}"
        lines.append(line)
    return lines or ["no step of this stage is due yet"]


def explanation_dict(story: Explanation) -> dict[str, object]:
    return {
        "account_id": story.account.account_id,
        "now": story.now.isoformat(),
        "dpd": story.dpd,
        "stage": story.stage,
        "zones": list(story.zones),
        "packs": list(story.packs),
        "steps": [
            {
                "stage": s.stage,
                "step": s.step,
                "channel": s.channel,
                "due_dpd": s.due_dpd,
                "outcome": s.outcome,
                "reason": s.reason,
                "rule_id": s.rule_id,
                "source": s.source,
                "at": s.at.isoformat() if s.at else None,
            }
            for s in story.steps
        ],
    }


def simulation_lines(result: Simulation) -> list[str]:
    """The timeline: per account, per day, what went (UTC time, stage/step, channel)."""
    lines = [
        f"simulation {result.start.isoformat(timespec='minutes')} → "
        f"{result.end.isoformat(timespec='minutes')}: {len(result.sent)} messages sent"
    ]
    for account_id, by_day in result.timeline().items():
        lines.append(account_id)
        for day, sent in by_day.items():
            went = "; ".join(
                f"{s.at:%H:%M} {s.stage}/{s.step} {s.channel}"
                + (f" (waited: {s.hold_reason})" if s.hold_reason else "")
                for s in sent
            )
            lines.append(f"  {day}  {went}")
        lines += [f"  held: {h}" for h in result.held.get(account_id, [])]
    return lines


def simulation_table(result: Simulation) -> Table:
    table = Table("stage", "channel", "outcome", "count", title="totals")
    for (stage, channel, outcome), n in sorted(result.totals.items()):
        table.add_row(stage, channel, outcome, str(n))
    return table


def simulation_dict(result: Simulation) -> dict[str, object]:
    return {
        "from": result.start.isoformat(),
        "to": result.end.isoformat(),
        "sent": [
            {
                "at": s.at.isoformat(),
                "account_id": s.account_id,
                "stage": s.stage,
                "step": s.step,
                "channel": s.channel,
                "waited_for": s.hold_reason,
            }
            for s in sorted(result.sent, key=lambda s: (s.at, s.account_id))
        ],
        "held": dict(result.held),
        "totals": [
            {"stage": st, "channel": ch, "outcome": o, "count": n}
            for (st, ch, o), n in sorted(result.totals.items())
        ],
    }
