"""``dispatcher templates list|lint|preview``, driven through Typer as a user would."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from dispatcher import cli
from dispatcher.bootstrap import bootstrap
from dispatcher.error import InputError
from dispatcher.service.importer import import_accounts
from dispatcher.templates_cli import templates_app
from tests.conftest import write_csv
from tests.e2e.test_cli import NOW
from tests.factory import ROOT
from tests.integration.test_pipeline import row


def make_app() -> typer.Typer:
    """The root app as dispatcher.cli registers the sub-app: ``dispatcher templates ...``."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @root.callback()
    def _root() -> None:
        pass

    root.add_typer(templates_app, name="templates")
    return root


def settings_file(tmp_path: Path, templates: Path = ROOT / "templates") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'templates_dir = "{templates}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[creditor]\nname = "Acme Consumer Finance"\n'
        f'[sinks]\ndirectory = "{tmp_path / "sink"}"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = settings_file(tmp_path)
    monkeypatch.setattr(cli.state, "config", path)
    monkeypatch.delenv("DISPATCHER_DATABASE_URL", raising=False)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(make_app(), ["templates", *args], env={"COLUMNS": "200"})


def broken_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tree = Path(shutil.copytree(ROOT / "templates", tmp_path / "templates"))
    monkeypatch.setattr(cli.state, "config", settings_file(tmp_path, tree))
    return tree


def test_list_shows_every_template(config: Path) -> None:
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "early_day1" in result.stdout
    assert "approved" in result.stdout
    assert "24 templates" in result.stdout


def test_list_json(config: Path) -> None:
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 24
    first = next(
        r for r in rows if (r["channel"], r["name"], r["locale"]) == ("sms", "early_day1", "en-US")
    )
    assert first["id"] == "early_day1"
    assert first["version"] == "1.0.0"
    assert first["approval"] == "approved"
    assert len(first["sha256"]) == 64
    assert first["disclosures"] == ["creditor_identity", "opt_out"]


def test_lint_of_the_shipped_templates_is_clean(config: Path) -> None:
    result = invoke("lint", "--locale", "en-US", "--locale", "zh-CN")
    assert result.exit_code == 0, result.output
    assert "templates lint clean: 0 error(s), 0 warning(s); 24 templates" in result.stdout
    default = invoke("lint", "--json")
    assert default.exit_code == 0, default.output
    payload = json.loads(default.stdout)
    assert payload["ok"] is True
    assert payload["locales"] == ["en-US", "zh-CN"]
    assert payload["findings"] == []


def test_lint_exits_1_with_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = broken_tree(tmp_path, monkeypatch)
    path = tree / "sms" / "early_day1.en-US.txt.j2"
    path.write_text(path.read_text(encoding="utf-8").replace(" {{ opt_out }}", ""), "utf-8")
    result = invoke("lint")
    assert result.exit_code == 1, result.output
    assert f"{path}:7: error lint.disclosure.opt_out:" in result.stdout
    assert "FAILED: 1 error(s)" in result.stdout
    as_json = invoke("lint", "--json")
    assert as_json.exit_code == 1
    payload = json.loads(as_json.stdout)
    assert payload["ok"] is False
    assert payload["findings"][0]["rule"] == "lint.disclosure.opt_out"
    assert payload["findings"][0]["line"] == 7


def test_lint_reports_a_syntax_error_as_a_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = broken_tree(tmp_path, monkeypatch)
    path = tree / "letters" / "late_day1.zh-CN.typ.j2"
    path.write_text(path.read_text(encoding="utf-8") + "\n{% if %}\n", "utf-8")
    result = invoke("lint")
    assert result.exit_code == 1, result.output
    assert f"{path}:" in result.stdout
    assert "lint.load" in result.stdout


def test_lint_of_a_locale_without_templates(config: Path) -> None:
    result = invoke("lint", "--locale", "fr-FR")
    assert result.exit_code == 1
    assert "early_day1.fr-FR.txt.j2: error lint.missing_template" in result.stdout


def test_preview_sms_prints_the_text_and_its_cost(config: Path) -> None:
    result = invoke("preview", "sms", "early_day1", "--locale", "en-US")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Acme Consumer Finance: Hi Margaret,")
    assert result.stdout.rstrip().endswith("Reply STOP to opt out.")
    assert "SMS: GSM-7, " in result.stderr
    assert "2 segment(s) (limit 3)" in result.stderr
    assert "version 1.0.0 (catalog: unknown, no database (dispatcher init))" in result.stderr
    chinese = invoke("preview", "sms", "early_day1", "--locale", "zh-CN")
    assert chinese.exit_code == 0, chinese.output
    assert "SMS: UCS-2, " in chinese.stderr


def test_preview_email_shows_subject_text_and_html(config: Path) -> None:
    result = invoke("preview", "email", "mid_day1", "-l", "zh-CN")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Subject: ")
    assert "--- HTML part ---" in result.stdout
    assert "<html" in result.stdout.lower()


def test_preview_letter_prints_typst_or_writes_a_pdf(config: Path, tmp_path: Path) -> None:
    source = invoke("preview", "letter", "mid_day15")
    assert source.exit_code == 0, source.output
    assert "#set page(" in source.stdout
    pdf = tmp_path / "letter.pdf"
    written = invoke("preview", "letter", "pre_legal_day1", "-l", "zh-CN", "--output", str(pdf))
    assert written.exit_code == 0, written.output
    assert pdf.read_bytes().startswith(b"%PDF")
    assert f"wrote {pdf}" in written.stderr


def test_preview_of_a_real_account(config: Path, tmp_path: Path) -> None:
    wired = bootstrap(settings_file=config)
    wired.store.create_schema()
    report = import_accounts(
        wired.store,
        write_csv(tmp_path / "a.csv", [row("ACC-7", date(2026, 6, 1), full_name="Zoë O'Brien")]),
        now=NOW,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0
    result = invoke("preview", "sms", "early_day7", "--account", "ACC-7", "--now", NOW.isoformat())
    assert result.exit_code == 0, result.output
    assert "Hi Zoë," in result.stdout
    assert "9 days past due" in result.stdout
    assert "account ACC-7" in result.stderr
    assert "(catalog: not registered: templates sync --as NAME)" in result.stderr
    wired.catalog.bootstrap(NOW)
    again = invoke("preview", "sms", "early_day7", "--account", "ACC-7", "--now", NOW.isoformat())
    assert "version 1.0.0 (catalog: approved)" in again.stderr


def test_preview_errors_are_dispatcher_errors(config: Path) -> None:
    wired = bootstrap(settings_file=config)
    wired.store.create_schema()
    unknown = invoke("preview", "sms", "early_day1", "--account", "NOPE")
    assert isinstance(unknown.exception, InputError)
    misuse = invoke("preview", "sms", "early_day1", "--output", "x.pdf")
    assert isinstance(misuse.exception, InputError)
