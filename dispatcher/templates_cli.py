"""``dispatcher templates``: list, lint, preview, and approve the compliance-owned templates.

A Typer sub-app; ``dispatcher.cli`` registers it with
``app.add_typer(templates_app, name="templates")``. Like every command, expected errors
(bad config, a template that does not load, an unknown account) are raised as
:class:`~dispatcher.error.DispatcherError` and become one line and exit 2 in
``dispatcher.cli.main``; ``lint`` reports template problems as findings and exits 1, and
so do ``approve``, ``reject`` and ``retire`` when a rule of the approval process refuses
(one line naming the rule). The acting person is ``--as NAME`` or ``$DISPATCHER_USER``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from dispatcher.bootstrap import App, bootstrap
from dispatcher.clock import SystemClock, parse_instant
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState
from dispatcher.error import InputError, StoreError
from dispatcher.service.template_catalog import ApprovalRefused, TemplateCatalog
from dispatcher.service.template_desk import preview_context
from dispatcher.service.template_lint import (
    Finding,
    Severity,
    has_errors,
    lint,
    lint_directory,
    locales_in_use,
    max_sms_segments,
)
from dispatcher.sms import analyse
from dispatcher.store.template_version import VersionRecord
from dispatcher.template import RenderedMessage, TemplateInfo, compile_pdf

templates_app = typer.Typer(
    no_args_is_help=True, help="List, lint and preview the compliance-owned templates."
)

out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _wired() -> App:
    """The application, built with the root command's ``--config``.

    Imported late: ``dispatcher.cli`` imports this module to register the sub-app.
    """
    from dispatcher import cli

    return bootstrap(settings_file=cli.state.config)


def _plain(text: str) -> None:
    """Message text and findings on stdout, exactly as written (no markup, no wrapping)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def _note(text: str) -> None:
    """What a message costs, and lint warnings, on stderr: stdout stays the message."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _info_dict(info: TemplateInfo) -> dict[str, object]:
    front = info.front_matter
    return {
        "channel": info.channel.value,
        "name": info.name,
        "locale": info.locale,
        "id": front.id,
        "version": front.version,
        "approval": front.approval.value,
        "description": front.description,
        "disclosures": list(front.disclosures),
        "files": [str(f) for f in info.files],
        "sha256": info.sha256,
    }


@templates_app.command("list")
def list_templates(as_json: JsonOption = False) -> None:
    """Every template: channel, name, locale, id, version, approval, content hash."""
    templates = _wired().templates
    infos = [templates.info(*key) for key in templates.names()]
    if as_json:
        out.print_json(json.dumps([_info_dict(i) for i in infos], ensure_ascii=False))
        return
    table = Table("channel", "name", "locale", "id", "version", "approval", "sha256")
    for info in infos:
        front = info.front_matter
        table.add_row(
            info.channel.value,
            info.name,
            info.locale,
            front.id,
            front.version,
            front.approval.value,
            info.sha256[:12],
        )
    out.print(table)
    out.print(f"{len(infos)} templates")


def _finding_line(finding: Finding) -> str:
    return f"{finding.location}: {finding.severity.value} {finding.rule}: {finding.message}"


@templates_app.command("lint")
def lint_command(
    locale: Annotated[
        list[str] | None,
        typer.Option(
            "--locale",
            "-l",
            help="A locale in use (repeat). Default: the strategy's and every template's.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check templates against the strategy and policy packs; exit 1 on any error."""
    wired = _wired()
    strategy, book = wired.strategy, wired.policies
    templates, findings = lint_directory(
        wired.settings.templates_dir, strategy, book, locale or None, creditor=wired.creditor
    )
    locales = locale or locales_in_use(strategy, templates)
    count = len(templates.names()) if templates is not None else 0
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = len(findings) - errors
    if as_json:
        payload = {
            "ok": errors == 0,
            "templates": count,
            "locales": locales,
            "errors": errors,
            "warnings": warnings,
            "findings": [f.as_dict() for f in findings],
        }
        out.print_json(json.dumps(payload, ensure_ascii=False))
    else:
        for finding in findings:
            _plain(_finding_line(finding))
        verdict = "FAILED" if errors else "clean"
        _plain(
            f"templates lint {verdict}: {errors} error(s), {warnings} warning(s); "
            f"{count} templates, locales {', '.join(locales)}"
        )
    if has_errors(findings):
        raise typer.Exit(1)


@templates_app.command("preview")
def preview(
    channel: Annotated[ChannelKind, typer.Argument(help="sms, email or letter.")],
    name: Annotated[str, typer.Argument(help="The template name, e.g. early_day1.")],
    locale: Annotated[
        str | None,
        typer.Option(
            "--locale",
            "-l",
            help="Template locale. Default: the account's (or the strategy's default).",
        ),
    ] = None,
    account_id: Annotated[
        str | None,
        typer.Option("--account", help="Render for this account from the database."),
    ] = None,
    dpd: Annotated[
        int | None,
        typer.Option("--dpd", help="Days past due of the sample data (default: the step's)."),
    ] = None,
    now: Annotated[
        str | None,
        typer.Option("--now", help="With --account: render as of this ISO 8601 time."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Letters: write the PDF here (else print Typst)."),
    ] = None,
) -> None:
    """Render one template with sample data (or a real account) and show what it costs."""
    if output is not None and channel is not ChannelKind.LETTER:
        raise InputError("--output writes a letter's PDF; SMS and email are printed")
    wired = _wired()
    templates, strategy = wired.templates, wired.strategy
    if account_id is not None:
        if dpd is not None:
            raise InputError("--dpd applies to sample data; with --account use --now")
        wired.store.check_schema()
        account = wired.store.account(account_id)
        if account is None:
            raise InputError(f"no account {account_id!r}")
        at = parse_instant(now) if now else SystemClock().now()
        chosen = locale or next(
            (
                candidate
                for candidate in (account.locale, strategy.default_locale)
                if templates.has(channel, name, candidate)
            ),
            account.locale,
        )
        context = preview_context(
            strategy, wired.creditor, (channel, name, chosen), account=account, now=at
        )
    else:
        if now is not None:
            raise InputError("--now applies with --account; for sample data use --dpd")
        chosen = locale or strategy.default_locale
        context = preview_context(strategy, wired.creditor, (channel, name, chosen), dpd=dpd)
    info = templates.info(channel, name, chosen)
    message = templates.render(channel, name, chosen, context)
    front = info.front_matter
    source = "sample data" if account_id is None else f"account {account_id}"
    _note(
        f"{info.channel} {front.id} {info.locale} version {front.version} "
        f"(catalog: {_catalog_state(wired, info)}) sha256 {info.sha256[:12]} | {source}, "
        f"{context['dpd']} days past due"
    )
    _show(wired, info, message, output)
    findings = lint(templates, strategy, wired.policies, [chosen], creditor=wired.creditor)
    files = {str(f) for f in info.files}
    for finding in findings:
        if finding.file.split("#")[0] in files:
            _note(_finding_line(finding))


def _catalog_state(wired: App, info: TemplateInfo) -> str:
    """What the catalog says of this file's content: only an approved version is sent."""
    url = make_url(wired.settings.database_url)
    unknown = "unknown, no database (dispatcher init)"
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        return unknown  # do not create an empty database file just to look
    try:
        wired.store.check_schema()
    except StoreError:
        return unknown
    versions = wired.catalog.versions.versions(info.channel, info.name, info.locale)
    state = next((v.state.value for v in versions if v.sha256 == info.sha256), None)
    return state or "not registered: templates sync --as NAME"


def _show(wired: App, info: TemplateInfo, message: RenderedMessage, output: Path | None) -> None:
    if info.channel is ChannelKind.SMS:
        _plain(message.body)
        sms = analyse(message.body)
        unit = "septets" if sms.encoding == "GSM-7" else "UCS-2 units"
        limit = max_sms_segments(wired.policies)
        _note(f"SMS: {sms.encoding}, {sms.units} {unit}, {sms.segments} segment(s) (limit {limit})")
        if sms.encoding == "UCS-2" and len(sms.non_gsm) <= 5:
            _note("UCS-2 because of: " + " ".join(sms.non_gsm[:10]))
        return
    if info.channel is ChannelKind.EMAIL:
        _plain(f"Subject: {message.subject}")
        _plain("")
        _plain(message.body)
        _plain("")
        _plain("--- HTML part ---")
        _plain(message.body_html or "")
        return
    if output is None:
        _plain(message.body)
        return
    pdf = compile_pdf(message.body)
    try:
        output.write_bytes(pdf)
    except OSError as exc:
        raise InputError(f"{output}: cannot write the PDF: {exc.strerror}") from None
    _note(f"wrote {output} ({len(pdf)} bytes)")


# -- versions and four-eyes approval (docs/TEMPLATES.md, "Versions and approval") --------
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="DISPATCHER_USER",
        help="Who you are (recorded; the author of a version cannot approve it). "
        "Default: $DISPATCHER_USER.",
        show_default=False,
    ),
]
LocaleRequired = Annotated[
    str, typer.Option("--locale", "-l", help="The template's locale, e.g. en-US.")
]
ShaOption = Annotated[
    str,
    typer.Option("--sha", help="The version: its hash or a prefix of it (templates versions)."),
]
ChannelArgument = Annotated[ChannelKind, typer.Argument(help="sms, email or letter.")]
NameArgument = Annotated[str, typer.Argument(help="The template name, e.g. early_day1.")]
NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Record the action at this ISO 8601 time (default: now)."),
]


def _catalog_app() -> App:
    wired = _wired()
    wired.store.check_schema()
    return wired


def _actor(name: str | None) -> str:
    if name is None or not name.strip():
        raise InputError("--as NAME (or DISPATCHER_USER) is required: say who you are")
    return name


def _at(now: str | None) -> datetime:
    return parse_instant(now) if now else SystemClock().now()


def _refused(exc: ApprovalRefused) -> NoReturn:
    """One line saying which rule refused and why; lint errors after it. Exit 1."""
    _note(f"error: {exc}")
    for finding in exc.findings:
        _note(_finding_line(finding))
    raise typer.Exit(1)


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _version_dict(v: VersionRecord, on_disk: bool) -> dict[str, object]:
    return {
        "id": v.id,
        "sha256": v.sha256,
        "label": v.label,
        "state": v.state.value,
        "author": v.author,
        "created_at": v.created_at.isoformat(),
        "approved_by": v.approved_by,
        "approved_at": v.approved_at.isoformat() if v.approved_at else None,
        "rejected_by": v.rejected_by,
        "rejected_at": v.rejected_at.isoformat() if v.rejected_at else None,
        "retired_by": v.retired_by,
        "retired_at": v.retired_at.isoformat() if v.retired_at else None,
        "note": v.note,
        "retire_note": v.retire_note,
        "on_disk": on_disk,
    }


def catalog_summary(catalog: TemplateCatalog, now: datetime) -> str:
    """For ``dispatcher init``: bootstrap an empty catalog, then say where it stands."""
    bootstrapped = catalog.bootstrap(now)
    statuses, problem = catalog.status()
    approved = sum(v.state is VersionState.APPROVED for s in statuses for v in s.versions)
    drafts = sum(v.state is VersionState.DRAFT for s in statuses for v in s.versions)
    changed = sum(not s.disk_registered for s in statuses)
    line = (
        f"template catalog: {approved} approved version(s), {drafts} draft(s) awaiting "
        f"approval, {changed} file(s) changed on disk and not registered"
    )
    if bootstrapped:
        line += f" ({len(bootstrapped)} approved now from repository front matter: bootstrap)"
    if changed:
        line += "; register them with `dispatcher templates sync --as NAME`"
    if problem is not None:
        line += f"; the files on disk do not load: {problem}"
    return line


@templates_app.command("versions")
def versions_command(
    name: Annotated[str | None, typer.Argument(help="Only this template name.")] = None,
    channel: Annotated[
        ChannelKind | None, typer.Option("--channel", help="Only this channel.")
    ] = None,
    locale: Annotated[str | None, typer.Option("--locale", "-l", help="Only this locale.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every version of every template: state, author, approver, and what is on disk now."""
    statuses, problem = _catalog_app().catalog.status()
    chosen = [
        s
        for s in statuses
        if (name is None or s.key[1] == name)
        and (channel is None or s.key[0] is channel)
        and (locale is None or s.key[2] == locale)
    ]
    if problem is not None:
        _note(f"warning: the templates on disk do not load, so 'on disk' is unknown: {problem}")
    if as_json:
        payload = [
            {
                "channel": s.key[0].value,
                "name": s.key[1],
                "locale": s.key[2],
                "on_disk_sha256": s.disk_sha256,
                "on_disk_registered": s.disk_registered,
                "versions": [_version_dict(v, v.sha256 == s.disk_sha256) for v in s.versions],
            }
            for s in chosen
        ]
        out.print_json(json.dumps(payload, ensure_ascii=False))
        return
    table = Table(
        "channel",
        "name",
        "locale",
        "sha256",
        "label",
        "state",
        "author",
        "created",
        "decided by",
        "decided",
        "note",
        "on disk",
    )
    for s in chosen:
        channel_kind, template, template_locale = s.key
        for v in s.versions:
            decided_by = v.approved_by or v.rejected_by or ""
            decided = v.approved_at or v.rejected_at
            note = v.note or ""
            if v.state is VersionState.RETIRED:
                note = f"retired {_short(v.retired_at)} by {v.retired_by}: {v.retire_note or ''}"
            table.add_row(
                channel_kind.value,
                template,
                template_locale,
                v.sha256[:12],
                v.label,
                v.state.value,
                v.author,
                _short(v.created_at),
                decided_by,
                _short(decided),
                note,
                "yes" if v.sha256 == s.disk_sha256 else "",
            )
        if not s.disk_registered and s.disk_sha256 is not None:
            table.add_row(
                channel_kind.value,
                template,
                template_locale,
                s.disk_sha256[:12],
                s.disk_label or "",
                "not registered",
                "",
                "",
                "",
                "",
                "changed on disk: templates sync --as NAME",
                "yes",
            )
    out.print(table)
    waiting = sum(v.state is VersionState.DRAFT for s in chosen for v in s.versions)
    unregistered = sum(not s.disk_registered for s in chosen)
    _plain(
        f"{len(chosen)} templates; {waiting} draft(s) awaiting approval; "
        f"{unregistered} changed on disk and not registered"
    )


@templates_app.command("sync")
def sync_command(actor: ActorOption = None, now: NowOption = None) -> None:
    """Register every template file whose content is new as a draft by you (--as).

    Nothing sent changes until a second person approves the draft.
    """
    report = _catalog_app().catalog.sync(_at(now), _actor(actor))
    for v in report.bootstrapped:
        _plain(f"bootstrapped {v.describe()} (label {v.label}): approved in front matter")
    for v in report.drafted:
        _plain(f"drafted {v.describe()} (label {v.label}) by {v.author}")
    _plain(
        f"{len(report.drafted)} new draft(s), {len(report.bootstrapped)} bootstrapped; "
        f"{report.on_disk} templates on disk"
    )


@templates_app.command("approve")
def approve_command(
    channel: ChannelArgument,
    name: NameArgument,
    locale: LocaleRequired,
    sha: ShaOption,
    actor: ActorOption = None,
    note: Annotated[str | None, typer.Option("--note", help="A comment, kept.")] = None,
    now: NowOption = None,
) -> None:
    """Approve a draft (four eyes: not its author); it replaces the approved version."""
    catalog = _catalog_app().catalog
    try:
        done = catalog.approve(
            (channel, name, locale), sha, approver=_actor(actor), now=_at(now), note=note
        )
    except ApprovalRefused as exc:
        _refused(exc)
    v = done.approved
    replaced = f"; retired @{done.retired.sha256[:12]}" if done.retired is not None else ""
    _plain(
        f"approved {v.describe()} (label {v.label}, by {v.author}) as {v.approved_by}"
        f"{replaced}; the next plan sends it"
    )


@templates_app.command("reject")
def reject_command(
    channel: ChannelArgument,
    name: NameArgument,
    locale: LocaleRequired,
    sha: ShaOption,
    note: Annotated[str, typer.Option("--note", help="Why: what must change.")],
    actor: ActorOption = None,
    now: NowOption = None,
) -> None:
    """Reject a draft, saying why; it is never sent."""
    catalog = _catalog_app().catalog
    try:
        v = catalog.reject((channel, name, locale), sha, who=_actor(actor), note=note, now=_at(now))
    except ApprovalRefused as exc:
        _refused(exc)
    _plain(f"rejected {v.describe()} (label {v.label}) as {v.rejected_by}: {v.note}")


@templates_app.command("retire")
def retire_command(
    channel: ChannelArgument,
    name: NameArgument,
    locale: LocaleRequired,
    sha: ShaOption,
    note: Annotated[str, typer.Option("--note", help="Why it must stop being sent.")],
    actor: ActorOption = None,
    now: NowOption = None,
) -> None:
    """Withdraw the approved version with no successor: its steps are held until another
    version is approved."""
    catalog = _catalog_app().catalog
    try:
        v = catalog.retire((channel, name, locale), sha, who=_actor(actor), note=note, now=_at(now))
    except ApprovalRefused as exc:
        _refused(exc)
    _plain(
        f"retired {v.describe()} as {v.retired_by}; steps sending it are held "
        "template_not_approved until another version is approved"
    )


@templates_app.command("show")
def show_command(
    channel: ChannelArgument, name: NameArgument, locale: LocaleRequired, sha: ShaOption
) -> None:
    """Print the exact source of one version (what the catalog keeps and sends)."""
    v = _catalog_app().catalog.find((channel, name, locale), sha)
    _note(f"{v.describe()} label {v.label} {v.state} by {v.author} sha256 {v.sha256}")
    _plain(v.source.rstrip("\n"))
    if v.source_html is not None:
        _plain("--- HTML part ---")
        _plain(v.source_html.rstrip("\n"))


@templates_app.command("diff")
def diff_command(
    channel: ChannelArgument,
    name: NameArgument,
    locale: LocaleRequired,
    sha: Annotated[
        str | None,
        typer.Option("--sha", help="This version (default: the newest draft, else the file)."),
    ] = None,
) -> None:
    """Unified diff from the approved version to a draft (or to the file on disk)."""
    found = _catalog_app().catalog.diff((channel, name, locale), sha)
    if not found.lines:
        _note(f"no difference between the approved version and {found.target}")
        return
    for line in found.lines:
        out.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


__all__ = ["templates_app"]
