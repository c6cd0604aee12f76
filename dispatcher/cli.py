"""The command line (DESIGN.md, "Command line"): thin commands over the services.

Every command that depends on time takes ``--now``. Errors we expect (bad config, bad
input, database not initialised) print one line and exit 2; they never show a traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from dispatcher import heap, view
from dispatcher.bootstrap import App, bootstrap, simulation_copy
from dispatcher.clock import RunningClock, SystemClock, parse_instant
from dispatcher.error import DispatcherError, InputError
from dispatcher.service import audit_log, explainer, ops, retention, simulator
from dispatcher.service.export import audit_lines, write_messages
from dispatcher.service.history import account_history
from dispatcher.service.hold import CHANNEL_OF_REASON, place_hold
from dispatcher.service.importer import ImportReport, import_accounts
from dispatcher.service.planner import PlanReport
from dispatcher.service.sender import SendReport
from dispatcher.settings import DEFAULT_SETTINGS_FILE, example_settings_toml, load_settings
from dispatcher.store.schema import INITIAL
from dispatcher.templates_cli import catalog_summary, templates_app
from dispatcher.users_cli import users_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Compliant multi-channel reminders for debt collection.",
)
import_app = typer.Typer(no_args_is_help=True, help="Bring data in.")
export_app = typer.Typer(no_args_is_help=True, help="Take data out.")
app.add_typer(import_app, name="import")
hold_app = typer.Typer(no_args_is_help=True, help="Place, lift and list holds.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit chain.")
app.add_typer(audit_app, name="audit")
retention_app = typer.Typer(no_args_is_help=True, help="Retention: legal holds and purges.")
app.add_typer(retention_app, name="retention")
app.add_typer(export_app, name="export")
app.add_typer(hold_app, name="hold")
app.add_typer(templates_app, name="templates")
app.add_typer(users_app, name="users")
messages_app = typer.Typer(no_args_is_help=True, help="Settle messages by hand.")
app.add_typer(messages_app, name="messages")

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="DISPATCHER_CONFIG",
        help="Settings file (default: config/settings.toml if present).",
    ),
]
NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Act as if it were this ISO 8601 time (with offset), to replay."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class _State:
    config: Path | None = None


state = _State()


@app.callback()
def _root(config: ConfigOption = None) -> None:
    state.config = config


def _app(*, check_schema: bool = True) -> App:
    wired = bootstrap(settings_file=state.config)
    if check_schema:
        wired.outlasting(wired.store.check_schema, "opening the database", notify=_warn)
    return wired


def _now(value: str | None) -> datetime:
    return parse_instant(value) if value else SystemClock().now()


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Progress | None]:
    """A progress bar on a terminal; nothing when output goes to a file or a pipe."""
    if not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        progress.add_task(label, total=total)
        yield progress


def _advance(progress: Progress | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    task = progress.task_ids[0]

    def advance(n: int) -> None:
        progress.advance(task, n)

    return advance


# -- commands --------------------------------------------------------------------------------
@app.command()
def init() -> None:
    """Create or upgrade the database, write example settings if missing, check config loads."""
    settings_file = state.config or DEFAULT_SETTINGS_FILE
    if not settings_file.exists():
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(example_settings_toml(), encoding="utf-8")
        out.print(f"wrote example settings to {settings_file}")
    wired = _app(check_schema=False)
    migration = wired.store.create_schema()
    strategy = wired.strategy
    templates = wired.templates
    # The URL without its password: this goes to terminals and CI logs.
    shown = make_url(wired.settings.database_url).render_as_string(hide_password=True)
    out.print(f"database ready: {shown}")
    out.print(migration.describe())
    out.print(
        f"strategy {strategy.id!r}: {len(strategy.stages)} stages; "
        f"{len(templates.names())} templates loaded"
    )
    out.print(catalog_summary(wired.catalog, SystemClock().now()), markup=False)


@app.command()
def downgrade(
    to: Annotated[
        str,
        typer.Option("--to", help="Migration to go back to (default: the one before the newest)."),
    ] = "-1",
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: data in undone columns is lost.")] = (
        False
    ),
) -> None:
    """Undo migrations, to roll back to the previous dispatcher release (docs/OPERATIONS.md).

    Run it with the *newer* release installed (it knows how to undo its migrations), with
    every `serve` stopped, after a backup; then install the older release.
    """
    if not yes:
        raise InputError(
            "downgrade drops what the undone migrations added (columns, tables, their data): "
            "back up first, stop every `dispatcher serve`, then run again with --yes"
        )
    wired = _app(check_schema=False)
    if to == "-1" and wired.store.schema_revision() in (None, INITIAL):
        raise InputError(
            "the database is at its first migration (or has none): nothing before it but an "
            "empty database; say --to base to drop every table on purpose"
        )
    migration = wired.store.downgrade_schema(to)
    out.print(f"schema at migration {migration.after} (downgraded from {migration.before})")


@app.command()
def backup(
    target: Annotated[
        Path, typer.Argument(help="New file for the copy, e.g. backup/2026-12-01.db")
    ],
) -> None:
    """Copy the SQLite database consistently while the service runs (PostgreSQL: pg_dump)."""
    wired = _app(check_schema=False)
    wired.store.back_up(target)
    out.print(f"backed up to {target} at migration {wired.store.schema_revision()}")


@app.command()
def plan(
    now: NowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide, write nothing.")] = False,
    every: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Look at every account, not only those due for review "
            "(after editing accounts straight in the database).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Decide what is due for every account and queue it (or record why not)."""
    wired, at = _app(), _now(now)

    def run() -> PlanReport:
        # Planner and progress afresh on each attempt: a retry after an outage re-reads
        # what committed and plans only the rest (docs/OPERATIONS.md, "Database outages").
        planner = wired.planner(at)
        with _progress("planning", planner.count(at, every=every)) as progress:
            return planner.plan(at, dry_run=dry_run, every=every, on_progress=_advance(progress))

    report = wired.outlasting(run, "plan", notify=_warn)
    _show_plan(report, as_json)


@app.command()
def send(now: NowOption = None, as_json: JsonOption = False) -> None:
    """Deliver queued messages whose time has come."""
    wired, at = _app(), _now(now)
    report = _send(wired, at)
    _show_send(report, as_json)


def _send(wired: App, at: datetime) -> SendReport:
    """One send pass, again after a database outage: what the cut-off pass left
    ``sending`` is not taken again before its lease ends, then reconciled."""
    return wired.outlasting(lambda: asyncio.run(wired.sender().send(at)), "send", notify=_warn)


def _warn(line: str) -> None:
    # soft_wrap: one line for log collectors and grep, whatever the terminal's width.
    err.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def serve(
    now: Annotated[
        str | None,
        typer.Option(
            "--now", help="Start the service's clock at this instant (it then runs at real pace)."
        ),
    ] = None,
) -> None:
    """Run the service: planning on its cron, the send loop, housekeeping, HTTP probes.

    SIGTERM/SIGINT stop it cleanly (exit 0); SIGHUP reloads strategy, policy packs and
    templates (see `dispatcher reload`).
    """
    from dispatcher.daemon import Service  # the service stack loads only for `serve`
    from dispatcher.log import configure_logging

    wired = _app()
    serve_settings = wired.settings.serve
    configure_logging(
        serve_settings.log_level.upper(),
        json=serve_settings.log_json,
        secrets=wired.settings.secret_values(),
    )
    clock = RunningClock(parse_instant(now)) if now else SystemClock()
    service = Service(wired, clock=clock)
    pid_file = serve_settings.pid_file
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    try:
        code = asyncio.run(service.run())
    finally:
        if pid_file.exists() and pid_file.read_text(encoding="utf-8").strip() == str(os.getpid()):
            pid_file.unlink()
    raise typer.Exit(code)


@app.command()
def reload(
    pid: Annotated[
        int | None, typer.Option("--pid", help="Process id (default: from serve.pid_file).")
    ] = None,
) -> None:
    """Ask a running `dispatcher serve` to reload strategy, policy packs and templates.

    The service validates the new configuration first; if it is invalid it logs why
    and keeps the old one in force.
    """
    if pid is None:
        pid_file = bootstrap(settings_file=state.config).settings.serve.pid_file
        try:
            pid = int(pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            raise InputError(f"{pid_file}: no running service found (is `serve` up?)") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise InputError(f"no process {pid}: is `dispatcher serve` running?") from None
    out.print(f"asked process {pid} to reload; its log says whether the new config was taken")


@app.command("run-once")
def run_once(now: NowOption = None, as_json: JsonOption = False) -> None:
    """Plan, then send: one full cycle."""
    wired, at = _app(), _now(now)

    def run() -> PlanReport:
        planner = wired.planner(at)
        with _progress("planning", planner.count(at)) as progress:
            return planner.plan(at, on_progress=_advance(progress))

    planned = wired.outlasting(run, "plan", notify=_warn)
    sent = _send(wired, at)
    if as_json:
        out.print_json(json.dumps({"plan": view.plan_dict(planned), "send": view.send_dict(sent)}))
        return
    _show_plan(planned, False)
    _show_send(sent, False)


@import_app.command("accounts")
def import_accounts_command(
    file: Annotated[Path, typer.Argument(help="Accounts CSV (DESIGN.md contract).")],
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upsert accounts from CSV; bad rows go to FILE's .rejects.csv. Exit 1 if any."""
    wired, at = _app(), _now(now)

    def run() -> ImportReport:
        # An upsert by account_id: a retry after an outage writes the same rows again.
        with _progress("importing", None) as progress:
            return import_accounts(
                wired.store,
                file,
                now=at,
                default_timezone=wired.settings.default_timezone,
                default_region=wired.settings.default_region,
                workers=_import_workers(file),
                on_progress=_advance(progress),
            )

    report = wired.outlasting(run, "import", notify=_warn)
    if as_json:
        out.print_json(json.dumps(view.import_dict(report)))
    else:
        summary, *details = view.import_lines(report)
        out.print(summary, markup=False, highlight=False)
        for line in details:
            err.print(line, markup=False, highlight=False)
    if report.rejected:
        raise typer.Exit(1)


def _import_workers(path: Path) -> int:
    """Validate big files on every core; small ones are not worth the process start-up."""
    try:
        big = path.stat().st_size > 20_000_000
    except OSError:
        return 1  # the reader reports the missing file with its name
    return min(os.cpu_count() or 1, 4) if big else 1


@app.command()
def history(account_id: str, as_json: JsonOption = False) -> None:
    """Every message and hold for one account, with its audit trail."""
    wired = _app()
    story = account_history(wired.store, wired.strategy, account_id)
    account, messages, audit = story.account, story.messages, story.audit
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "account_id": account_id,
                    "cycle": account.cycle,
                    "messages": [_plain(m) for m in messages],
                    "holds": [_plain(h) for h in story.holds],
                    "audit": [{**_plain(a), "detail": json.loads(a["detail"])} for a in audit],
                },
                ensure_ascii=False,
            )
        )
        return
    out.print(
        f"[bold]{account.account_id}[/]  {account.full_name}  {account.balance} "
        f"{account.currency}  due {account.due_date}  cycle {account.cycle}  "
        f"tz {account.timezone}"
    )
    table = Table(
        "created",
        "stage",
        "step",
        "channel",
        "status",
        "reason / template",
        "sent",
        "delivery",
        title="messages",
    )
    for m in messages:
        # template_version is the content hash (docs/TEMPLATES.md): 12 digits name it.
        why = m["hold_reason"] or f"{m['template_id'] or ''} @{(m['template_version'] or '')[:12]}"
        table.add_row(
            _ts(m["created_at"]),
            m["stage"],
            m["step"],
            m["channel"],
            m["status"],
            why,
            _ts(m["sent_at"]),
            " ".join(filter(None, (m["delivery_status"], m["delivery_error"]))),
        )
    out.print(table)
    holds = story.holds
    if holds:
        placed = Table(
            "id", "reason", "channel", "from", "until", "by", "note", "lifted", title="holds"
        )
        for h in holds:
            placed.add_row(
                str(h["id"]),
                h["reason"],
                h["channel"] or "all",
                _ts(h["starts_at"]),
                _ts(h["ends_at"]),
                h["created_by"],
                h["note"],
                _ts(h["lifted_at"]),
            )
        out.print(placed)
    trail = Table("at", "event", "actor", "message", "detail", title="audit")
    for a in audit:
        trail.add_row(
            _ts(a["at"]), a["event"], a["actor"], (a["message_id"] or "")[:8], a["detail"]
        )
    out.print(trail)


@app.command()
def explain(account_id: str, now: NowOption = None, as_json: JsonOption = False) -> None:
    """Why was (or wasn't) this customer contacted: each due step with its rule and source."""
    wired, at = _app(), _now(now)
    story = explainer.explain(wired.store, wired.strategy, wired.timing, account_id, at)
    if as_json:
        out.print_json(json.dumps(view.explanation_dict(story), ensure_ascii=False))
    else:
        for line in [*view.explanation_lines(story), *view.explanation_steps(story)]:
            out.print(line, markup=False, highlight=False)


@app.command()
def simulate(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD, UTC) or instant.")],
    days: Annotated[int, typer.Option("--days", min=1, max=730, help="How many days.")] = 30,
    accounts: Annotated[
        Path | None, typer.Option("--accounts", help="Import this CSV into the copy first.")
    ] = None,
    step_hours: Annotated[float, typer.Option("--step-hours", min=0.25)] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Replay the calendar on a throwaway copy of the database: what would go, what is held."""
    wired = _app()
    begin = _since(start)
    assert begin is not None
    with tempfile.TemporaryDirectory(prefix="dispatcher-simulate-") as tmp:
        copy = simulation_copy(wired, Path(tmp))
        if accounts is not None:
            import_accounts(
                copy.store,
                accounts,
                now=begin,
                default_timezone=copy.settings.default_timezone,
                default_region=copy.settings.default_region,
            )
        result = simulator.simulate(copy, begin, days, timedelta(hours=step_hours))
    if as_json:
        out.print_json(json.dumps(view.simulation_dict(result), ensure_ascii=False))
        return
    for line in view.simulation_lines(result):
        out.print(line, markup=False, highlight=False)
    out.print(view.simulation_table(result))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@hold_app.command("add")
def hold_add(
    account_id: str,
    reason: Annotated[str, typer.Option(help="dispute, bankruptcy, promise_to_pay, ...")],
    note: Annotated[str, typer.Option(help="Evidence: why, and where the proof is.")],
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    until: Annotated[str | None, typer.Option(help="Lifts by itself then (date or time).")] = None,
    person: Annotated[
        bool, typer.Option("--person", help="Every account sharing the phone or email.")
    ] = False,
    now: NowOption = None,
) -> None:
    """Place a hold on an account (or the person behind it), with an evidence note."""
    wired, at = _app(), _now(now)
    ends = _since(until) if until else None
    if ends is not None and until and len(until) == 10:
        ends += timedelta(days=1)  # a date means "through that day"
    hold_id = place_hold(
        wired.store,
        account_id,
        reason,
        note=note,
        channel=channel,
        ends_at=ends,
        person=person,
        actor=_actor(),
        now=at,
    )
    channel = CHANNEL_OF_REASON.get(reason, channel)
    out.print(
        f"hold {hold_id} placed on {account_id}: {reason}"
        f"{' (' + channel + ')' if channel else ''}"
        f"{' until ' + ends.isoformat() if ends else ''}",
        markup=False,
    )


@hold_app.command("lift")
def hold_lift(
    hold_id: int,
    note: Annotated[str, typer.Option(help="Why it is lifted.")],
    now: NowOption = None,
) -> None:
    """Lift a hold; it stays in the account's history with who lifted it and why."""
    if not note.strip():
        raise InputError("--note must say why the hold is lifted")
    wired, at = _app(), _now(now)
    account_id = wired.store.lift_hold(hold_id, note=note, actor=_actor(), now=at)
    out.print(f"hold {hold_id} on {account_id} lifted", markup=False)


@hold_app.command("list")
def hold_list(account_id: str, as_json: JsonOption = False) -> None:
    """Every hold of an account, active and lifted."""
    holds = [_plain(h) for h in _app().store.holds_of(account_id)]
    if as_json:
        out.print_json(json.dumps(holds, ensure_ascii=False))
        return
    table = Table(
        "id",
        "reason",
        "channel",
        "scope",
        "from",
        "until",
        "source",
        "note",
        "lifted",
        title=f"holds of {account_id}",
    )
    for h in holds:
        table.add_row(
            str(h["id"]),
            str(h["reason"]),
            str(h["channel"] or "all"),
            str(h["scope"]),
            str(h["starts_at"])[:16],
            str(h["ends_at"] or "")[:16],
            str(h["source"]),
            str(h["note"]),
            str(h["lifted_at"] or "")[:16],
        )
    out.print(table)


@messages_app.command("resolve")
def messages_resolve(
    message_id: str,
    as_: Annotated[
        str,
        typer.Option(
            "--as", help="sent (the customer got it) or resend (it did not arrive: send again)."
        ),
    ],
    note: Annotated[str, typer.Option(help="How you know: the provider's log, the customer.")],
    now: NowOption = None,
) -> None:
    """Settle a message of unknown outcome (a crash or a lost connection mid-hand-over).

    Nobody can tell by machine whether an SMTP server took it; a person checks the mail
    server's log (or asks), then says so here. Audited with the note and who said it.
    """
    if as_ not in ("sent", "resend"):
        raise InputError(f"--as {as_!r}: choose sent or resend")
    if not note.strip():
        raise InputError("--note must say how you know, it is kept in the audit log")
    wired, at = _app(), _now(now)
    account_id = wired.store.resolve_unknown(
        message_id, sent=as_ == "sent", note=note, actor=_actor(), now=at
    )
    then = "recorded as sent" if as_ == "sent" else "queued to be sent again"
    out.print(f"message {message_id} of {account_id} {then}", markup=False)


@messages_app.command("retry")
def messages_retry(
    message_id: str,
    note: Annotated[str, typer.Option(help="Why it should go again (kept in the audit log).")],
    now: NowOption = None,
) -> None:
    """Queue a failed message again for one more attempt (house rule HR-40); audited.

    The sender checks holds, the contact window, caps and the stage again before it goes.
    """
    wired, at = _app(), _now(now)
    account_id = ops.retry_failed(wired.ops, message_id, actor=_actor(), note=note, now=at)
    out.print(f"message {message_id} of {account_id} queued again", markup=False)


def _plain(row: Mapping[Any, Any]) -> dict[str, object]:
    return {k: (v.isoformat() if isinstance(v, datetime | date) else v) for k, v in row.items()}


@audit_app.command("seal")
def audit_seal() -> None:
    """Chain the audit records not sealed yet and write the head to the anchor file.

    `serve` does this at every housekeeping run; run it after CLI work without a service.
    """
    wired = _app()
    sealed = audit_log.seal(wired.audit_chain, wired.anchors, anchor=True)
    if sealed.head is None:
        out.print("audit chain is empty")
        return
    where = f"; anchor written to {wired.anchors.path}" if sealed.anchored else ""
    out.print(f"audit chain sealed to seq {sealed.head.seq} ({sealed.head.hash[:16]}…){where}")


@audit_app.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Walk the audit chain and the anchors; name the first broken record (exit 1)."""
    wired = _app()
    found = audit_log.check(wired.audit_chain, wired.anchors)
    verdict = found.verdict
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "intact": verdict.intact,
                    "sealed": verdict.sealed,
                    "unsealed": found.unsealed,
                    "anchors": found.anchors,
                    "head": None
                    if verdict.head is None
                    else {"seq": verdict.head.seq, "hash": verdict.head.hash},
                    "broken": verdict.broken,
                    "at_seq": verdict.at_seq,
                    "record_id": verdict.record_id,
                    "explanation": verdict.explanation,
                }
            )
        )
    elif verdict.intact:
        head = f", head {verdict.head.hash[:16]}…" if verdict.head else ""
        out.print(
            f"audit chain intact: {verdict.sealed} records{head}; checked against "
            f"{found.anchors} anchors"
        )
    else:
        err.print(f"audit chain BROKEN ({verdict.broken}): {verdict.explanation}", markup=False)
    if verdict.intact and found.unsealed and not as_json:
        out.print(f"{found.unsealed} newer records not sealed yet (`dispatcher audit seal`)")
    if not verdict.intact:
        raise typer.Exit(1)


@retention_app.command("purge")
def retention_purge(
    now: NowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count, change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove personal data past its retention period; digests and the chain stay."""
    wired, at = _app(), _now(now)
    report = retention.purge(
        wired.retention, wired.audit_chain, wired.retention_policy, at, dry_run=dry_run
    )
    rows = {
        kind.value: {
            "accounts": done.accounts,
            "messages": done.messages,
            "audit_records": done.audit_records,
            "holds": done.holds,
        }
        for kind, done in report.kinds.items()
    }
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "now": at.isoformat(),
                    "dry_run": dry_run,
                    "kinds": rows,
                    "files_removed": report.files_removed,
                }
            )
        )
        return
    verb = "would purge" if dry_run else "purged"
    for kind, counts in rows.items():
        out.print(f"{kind}: {verb} {counts['accounts']} accounts", highlight=False)
    if report.files_removed:
        out.print(f"letter files removed: {report.files_removed}")


@retention_app.command("hold")
def retention_hold(
    account_id: str,
    note: Annotated[str, typer.Option(help="Why: the case, the request, its reference.")],
) -> None:
    """Place a legal hold: nothing of this account is purged until it is released."""
    wired = _app()
    wired.retention.set_legal_hold(account_id, on=True, note=note, actor=_actor(), now=_now(None))
    out.print(f"legal hold placed on {account_id}")


@retention_app.command("release")
def retention_release(
    account_id: str,
    note: Annotated[str, typer.Option(help="Why the hold may end.")],
) -> None:
    """Release a legal hold; the account's records age out as usual again."""
    wired = _app()
    wired.retention.set_legal_hold(account_id, on=False, note=note, actor=_actor(), now=_now(None))
    out.print(f"legal hold released on {account_id}")


UntilOption = Annotated[
    str | None,
    typer.Option("--until", help="Only before D (a date: its start, UTC; or an instant)"),
]


def _export_format(fmt: str) -> Literal["jsonl", "csv"]:
    """The ``--format`` of an export, checked before anything is read."""
    if fmt == "jsonl":
        return "jsonl"
    if fmt == "csv":
        return "csv"
    raise InputError(f"--format {fmt!r}: choose jsonl or csv")


@export_app.command("messages")
def export_messages(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    since: Annotated[str | None, typer.Option("--since", help="Only changed on/after D")] = None,
    until: UntilOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
) -> None:
    """Every message with status and template version, for auditors and other programs."""
    kind = _export_format(fmt)
    wired = _app()
    rows = wired.store.iter_messages(_since(since), _since(until))
    if output is None:
        write_messages(rows, sys.stdout, kind)
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        count = write_messages(rows, handle, kind)
    err.print(f"{count} messages written to {output}")


@export_app.command("audit")
def export_audit(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    since: Annotated[str | None, typer.Option("--since", help="Only written on/after D")] = None,
    until: UntilOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
) -> None:
    """Every audit record (event, actor, detail, its place in the chain), for auditors."""
    kind = _export_format(fmt)
    wired = _app()
    lines = audit_lines(wired.store.iter_audit(_since(since), _since(until)), kind)
    if output is None:
        for line in lines:
            sys.stdout.write(line)
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(lines)
    err.print(f"audit records written to {output}")


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Size of the sample portfolio.")] = 200,
    now: NowOption = None,
) -> None:
    """Seed a realistic sample portfolio and run one cycle with the local file sinks."""
    from dispatcher.demo import run_demo

    run_demo(_app(check_schema=False), accounts=accounts, now=_now(now), console=out)


# -- output ----------------------------------------------------------------------------------
def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=UTC)
    except ValueError:
        return parse_instant(value)


def _show_plan(report: PlanReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(view.plan_dict(report)))
    else:
        out.print(view.plan_table(report))


def _show_send(report: SendReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(view.send_dict(report)))
    else:
        out.print(view.send_table(report))


def main() -> None:
    """Entry point: expected errors become one line on stderr and exit code 2."""
    heap.tune()
    try:
        app()
    except DispatcherError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except DBAPIError as exc:
        # A database failure outside the retried runs (or not an outage): one line naming
        # the database, never a traceback. The URL's password is not in it.
        err.print(f"error: {_database_failure(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


def _database_failure(exc: DBAPIError) -> str:
    reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
    try:
        where = load_settings(state.config).database_url
        where = make_url(where).render_as_string(hide_password=True)
    except (DispatcherError, ArgumentError):
        where = "the database"
    return f"database {where}: {reason}"
