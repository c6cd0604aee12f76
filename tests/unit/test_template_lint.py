"""Template lint: each rule fires on a broken copy of the shipped templates, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError
from dispatcher.policy_book import PolicyBook
from dispatcher.service.template_lint import (
    Finding,
    Severity,
    finding_from_error,
    has_errors,
    lint,
    lint_directory,
    locales_in_use,
    max_sms_segments,
    required_disclosures,
)
from dispatcher.template import TemplateSet
from tests.factory import ROOT, shipped_strategy

TEMPLATES = ROOT / "templates"
POLICIES = ROOT / "config" / "policies"


@pytest.fixture(scope="module")
def book() -> PolicyBook:
    return PolicyBook.load(POLICIES)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of the shipped templates for a test to break."""
    return Path(shutil.copytree(TEMPLATES, tmp_path / "templates"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def run(
    tree: Path, book: PolicyBook, locales: list[str] | None = None
) -> tuple[TemplateSet | None, list[Finding]]:
    return lint_directory(tree, shipped_strategy(), book, locales)


def rules(findings: list[Finding], severity: Severity = Severity.ERROR) -> set[str]:
    return {f.rule for f in findings if f.severity is severity}


def only(findings: list[Finding], rule: str) -> Finding:
    matching = [f for f in findings if f.rule == rule]
    assert len(matching) == 1, findings
    return matching[0]


def front_line(path: Path, key: str) -> int:
    lines = path.read_text(encoding="utf-8").split("\n")
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(f"{key} ="))


def test_shipped_templates_lint_clean_for_en_us_and_zh_cn(book: PolicyBook) -> None:
    templates = TemplateSet.load(TEMPLATES)
    findings = lint(templates, shipped_strategy(), book, ["en-US", "zh-CN"])
    assert findings == []
    assert not has_errors(findings)


def test_locales_in_use_are_the_default_and_every_template_locale() -> None:
    templates = TemplateSet.load(TEMPLATES)
    assert locales_in_use(shipped_strategy(), templates) == ["en-US", "zh-CN"]
    assert locales_in_use(shipped_strategy(), None) == ["en-US"]


def test_a_step_without_a_template_for_a_locale_in_use(tree: Path, book: PolicyBook) -> None:
    missing = tree / "sms" / "early_day7.zh-CN.txt.j2"
    missing.unlink()
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.missing_template")
    assert finding.file == str(missing)
    assert finding.line is None
    assert finding.severity is Severity.ERROR
    assert "zh-CN" in finding.message
    # Not in use: only en-US asked for, nothing missing.
    _templates, findings = run(tree, book, ["en-US"])
    assert "lint.missing_template" not in rules(findings)


def test_a_new_locale_needs_every_step(tree: Path, book: PolicyBook) -> None:
    _templates, findings = run(tree, book, ["en-US", "fr-FR"])
    missing = [f for f in findings if f.rule == "lint.missing_template"]
    steps = {(s.channel, s.template) for st in shipped_strategy().stages for s in st.steps}
    assert len(missing) == len(steps)
    assert all("fr-FR" in f.file for f in missing)
    email = next(f for f in missing if "/email/" in f.file)
    assert "html.j2" in email.message


def test_another_spelling_of_a_locale_finds_its_templates(tree: Path, book: PolicyBook) -> None:
    _templates, findings = run(tree, book, ["en-US", "zh-Hans-CN"])
    assert findings == []


def test_sms_opt_out_declared_but_not_in_the_wording(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "early_day1.en-US.txt.j2"
    edit(path, " {{ opt_out }}", "")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.opt_out")
    assert (finding.file, finding.line) == (str(path), front_line(path, "disclosures"))
    assert "Reply STOP to opt out." in finding.message


def test_sms_opt_out_not_declared(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "mid_day1.zh-CN.txt.j2"
    edit(path, '["creditor_identity", "opt_out"]', '["creditor_identity"]')
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.opt_out")
    assert (finding.file, finding.line) == (str(path), front_line(path, "disclosures"))
    assert "front matter" in finding.message


def test_email_html_without_the_unsubscribe_link(tree: Path, book: PolicyBook) -> None:
    path = tree / "email" / "pre_due_day3.en-US.html.j2"
    edit(path, '<a href="{{ unsubscribe_link }}"', '<a href="https://example.com"')
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.opt_out")
    assert finding.file == str(path)
    assert "unsubscribe link" in finding.message


def test_email_text_without_the_unsubscribe_link(tree: Path, book: PolicyBook) -> None:
    path = tree / "email" / "late_day1.zh-CN.txt.j2"
    edit(path, "{{ unsubscribe_link }}", "")
    _templates, findings = run(tree, book)
    assert only(findings, "lint.disclosure.opt_out").file == str(path)


def test_letter_without_the_debt_collector_disclosure(tree: Path, book: PolicyBook) -> None:
    path = tree / "letters" / "mid_day15.zh-CN.typ.j2"
    edit(path, "本函由债务催收方发出", "本函由我们发出")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.debt_collector")
    assert finding.file == str(path)


def test_letter_must_declare_the_debt_collector_disclosure(tree: Path, book: PolicyBook) -> None:
    path = tree / "letters" / "late_day1.en-US.typ.j2"
    edit(path, '["creditor_identity", "debt_collector"]', '["creditor_identity"]')
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.debt_collector")
    assert finding.line == front_line(path, "disclosures")


def test_every_channel_names_the_creditor(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "early_day15.en-US.txt.j2"
    edit(path, "{{ creditor.name }}:", "We:")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.disclosure.creditor_identity")
    assert finding.file == str(path)
    assert "Northwind Lending" in finding.message


def test_an_sms_over_the_segment_limit_is_an_error(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "early_day7.en-US.txt.j2"
    edit(path, "{{ opt_out }}", "Thank you. " * 30 + "{{ opt_out }}")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.sms_segments")
    assert finding.file == str(path)
    assert finding.severity is Severity.ERROR
    assert "at most 3" in finding.message
    assert "GSM-7" in finding.message


def test_a_pack_can_lower_the_segment_limit(tmp_path: Path) -> None:
    policies = Path(shutil.copytree(POLICIES, tmp_path / "policies"))
    pack = policies / "UK.toml"
    # A top-level key: before the pack's first [[table]].
    pack.write_text("max_sms_segments = 1\n" + pack.read_text(encoding="utf-8"), encoding="utf-8")
    strict = PolicyBook.load(policies)
    assert max_sms_segments(strict) == 1
    findings = lint(TemplateSet.load(TEMPLATES), shipped_strategy(), strict, ["en-US", "zh-CN"])
    over = [f for f in findings if f.rule == "lint.sms_segments"]
    assert over  # the shipped SMS take two segments
    assert all("at most 1" in f.message for f in over)


def test_the_default_segment_limit_is_three(book: PolicyBook) -> None:
    assert max_sms_segments(book) == 3


def test_a_curly_quote_in_an_english_sms_warns_and_costs_segments(
    tree: Path, book: PolicyBook
) -> None:
    path = tree / "sms" / "early_day1.en-US.txt.j2"
    edit(path, "If you have already paid", "If you’ve already paid")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.sms_encoding")
    assert finding.severity is Severity.WARNING
    assert "U+2019" in finding.message
    # One apostrophe turns 267 septets (2 segments) into 258 UCS-2 units (4 segments).
    assert "4 UCS-2 segments" in only(findings, "lint.sms_segments").message


def test_a_render_error_names_the_file_and_line(tree: Path, book: PolicyBook) -> None:
    path = tree / "email" / "mid_day1.en-US.txt.j2"
    edit(path, "{{ creditor.phone }} |", "{{ creditor.nmae }} |")
    line = next(
        i
        for i, text in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1)
        if "creditor.nmae" in text
    )
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.render")
    assert (finding.file, finding.line) == (str(path), line)
    assert "nmae" in finding.message


def test_a_syntax_error_is_a_finding_not_a_crash(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "mid_day30.en-US.txt.j2"
    edit(path, "{{ first_name }}", "{{ first_name ")
    templates, findings = run(tree, book)
    assert templates is None
    finding = only(findings, "lint.load")
    assert finding.file == str(path)
    assert finding.line == 10
    assert has_errors(findings)


def test_an_unknown_variable_is_a_finding(tree: Path, book: PolicyBook) -> None:
    path = tree / "sms" / "mid_day30.en-US.txt.j2"
    edit(path, "{{ first_name }}", "{{ nickname }}")
    _templates, findings = run(tree, book)
    finding = only(findings, "lint.unknown_variable")
    assert finding.file == str(path)
    assert "nickname" in finding.message


def test_a_draft_in_use_and_an_unused_template_are_warnings(tree: Path, book: PolicyBook) -> None:
    edit(tree / "sms" / "early_day1.en-US.txt.j2", 'approval = "approved"', 'approval = "draft"')
    extra = tree / "sms" / "spare.en-US.txt.j2"
    source = (tree / "sms" / "early_day1.en-US.txt.j2").read_text(encoding="utf-8")
    extra.write_text(
        source.replace('id = "early_day1"', 'id = "spare"'),
        encoding="utf-8",
    )
    _templates, findings = run(tree, book)
    assert rules(findings, Severity.WARNING) == {"lint.approval", "lint.unused_template"}
    assert only(findings, "lint.unused_template").file == str(extra)
    assert not has_errors(findings)


def test_an_unknown_disclosure_name_is_a_warning(tree: Path, book: PolicyBook) -> None:
    edit(
        tree / "sms" / "early_day1.en-US.txt.j2",
        '["creditor_identity", "opt_out"]',
        '["creditor_identity", "opt_out", "mini_miranda"]',
    )
    _templates, findings = run(tree, book)
    assert "mini_miranda" in only(findings, "lint.disclosure.unknown").message


def test_without_a_us_pack_only_the_creditor_identity_is_required(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(POLICIES / "default.toml", policies / "default.toml")
    shutil.copy(POLICIES / "CN.toml", policies / "CN.toml")
    required = required_disclosures(PolicyBook.load(policies))
    assert required == {kind: frozenset({"creditor_identity"}) for kind in ChannelKind}
    us = required_disclosures(PolicyBook.load(POLICIES))
    assert us[ChannelKind.SMS] == {"creditor_identity", "opt_out"}
    assert us[ChannelKind.EMAIL] == {"creditor_identity", "opt_out"}
    assert us[ChannelKind.LETTER] == {"creditor_identity", "debt_collector"}


@pytest.mark.parametrize(
    ("message", "file", "line", "text"),
    [
        (
            "templates/sms/a.en-US.txt.j2:3: unexpected '}'",
            "templates/sms/a.en-US.txt.j2",
            3,
            "unexpected '}'",
        ),
        ("t/e/a.en-US.txt.j2#subject:1: boom", "t/e/a.en-US.txt.j2#subject", 1, "boom"),
        (
            "t/s/a.en-US.txt.j2: front matter lacks id",
            "t/s/a.en-US.txt.j2",
            None,
            "front matter lacks id",
        ),
        ("something else", "root", None, "something else"),
    ],
)
def test_finding_from_error(message: str, file: str, line: int | None, text: str) -> None:
    finding = finding_from_error(TemplateError(message), fallback_file="root")
    assert (finding.file, finding.line, finding.message) == (file, line, text)
    assert finding.location == (f"{file}:{line}" if line else file)
