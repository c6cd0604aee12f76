"""``dispatcher templates``: list, lint and preview the compliance-owned templates.

A Typer sub-app; ``dispatcher.cli`` registers it with
``app.add_typer(templates_app, name="templates")``. Like every command, expected errors
(bad config, a template that does not load, an unknown account) are raised as
:class:`~dispatcher.error.DispatcherError` and become one line and exit 2 in
``dispatcher.cli.main``; ``lint`` reports template problems as findings and exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.bootstrap import App, bootstrap
from dispatcher.clock import SystemClock, parse_instant
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError
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
from dispatcher.template import RenderedMessage, TemplateInfo, build_context, compile_pdf
from dispatcher.template.sample import sample_context

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
        actual = days_past_due(account.due_date, account.timezone, at)
        stage = strategy.stage_for(actual)
        context = build_context(
            account,
            dpd=actual,
            stage_id=stage.id if stage is not None else "none",
            creditor=wired.creditor,
            now=at,
        )
    else:
        if now is not None:
            raise InputError("--now applies with --account; for sample data use --dpd")
        chosen = locale or strategy.default_locale
        stage_id, step_dpd = _step_of(wired, channel, name)
        context = sample_context(
            chosen,
            dpd=dpd if dpd is not None else step_dpd,
            stage_id=stage_id,
            creditor=wired.creditor,
        )
    info = templates.info(channel, name, chosen)
    message = templates.render(channel, name, chosen, context)
    front = info.front_matter
    source = "sample data" if account_id is None else f"account {account_id}"
    _note(
        f"{info.channel} {front.id} {info.locale} version {front.version} "
        f"({front.approval}) sha256 {info.sha256[:12]} | {source}, "
        f"{context['dpd']} days past due"
    )
    _show(wired, info, message, output)
    findings = lint(templates, strategy, wired.policies, [chosen], creditor=wired.creditor)
    files = {str(f) for f in info.files}
    for finding in findings:
        if finding.file.split("#")[0] in files:
            _note(_finding_line(finding))


def _step_of(wired: App, channel: ChannelKind, name: str) -> tuple[str, int]:
    """(stage id, DPD) of the first step that sends this template, else a sample."""
    for stage in wired.strategy.stages:
        for step in stage.steps:
            if step.channel is channel and step.template == name:
                return stage.id, stage.step_dpd(step)
    return "early", 7


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


__all__ = ["templates_app"]
