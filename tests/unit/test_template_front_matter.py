"""Loading templates: front matter, file names and Jinja errors name the file (and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError
from dispatcher.template import Approval, TemplateSet
from dispatcher.template.front_matter import split_front_matter
from dispatcher.template.sample import sample_context

GOOD_HEADER = """+++
id = "t"
version = "2.1"
channel = "sms"
locale = "en-US"
description = "A test template."
disclosures = ["creditor_identity", "opt_out"]
approval = "draft"
+++
"""


def put(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_front_matter_is_parsed_and_replaced_by_an_equally_long_comment() -> None:
    front, source = split_front_matter(GOOD_HEADER + "Hello {{ first_name }}\n", "f")
    assert front.id == "t"
    assert front.version == "2.1"
    assert front.channel is ChannelKind.SMS
    assert front.disclosures == ("creditor_identity", "opt_out")
    assert front.approval is Approval.DRAFT
    assert front.subject is None
    assert source.count("\n") == (GOOD_HEADER + "Hello {{ first_name }}\n").count("\n")
    assert source.splitlines()[9] == "Hello {{ first_name }}"


def test_loaded_template_exposes_its_front_matter(tmp_path: Path) -> None:
    path = put(tmp_path, "sms/t.en-US.txt.j2", GOOD_HEADER + "Hi {{ first_name }}\n")
    templates = TemplateSet.load(tmp_path)
    info = templates.info(ChannelKind.SMS, "t", "en-US")
    assert info.front_matter.description == "A test template."
    assert info.files == (path,)
    message = templates.render(ChannelKind.SMS, "t", "en-US", sample_context("en-US"))
    assert message.body == "Hi Margaret"
    assert message.template_version == "2.1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("+++\n", ""), r":1: must start with front matter"),
        (('approval = "draft"\n+++\n', 'approval = "draft"\n'), r"no closing"),
        (('version = "2.1"', "version = 2"), r"version must be a non-empty string"),
        (('version = "2.1"', 'version = "2.1'), r"not valid TOML.*line 3"),
        (('channel = "sms"', 'channel = "fax"'), r"channel 'fax' is not one of"),
        (('channel = "sms"', 'channel = "email"'), r"channel email but the file is under sms/"),
        (('approval = "draft"', 'approval = "yes"'), r"approval 'yes' must be approved or draft"),
        (('id = "t"', 'id = "other"'), r"id 'other' must match the file name"),
        (('locale = "en-US"', 'locale = "zh-CN"'), r"locale 'zh-CN' must match"),
        (('description = "A test template."\n', ""), r"lacks description"),
        (('approval = "draft"', 'approval = "draft"\nowner = "x"'), r"unknown keys owner"),
        (('["creditor_identity", "opt_out"]', '"opt_out"'), r"disclosures must be a list"),
        (('["creditor_identity", "opt_out"]', '["opt_out", "opt_out"]'), r"repeat"),
        (('approval = "draft"', 'approval = "draft"\nsubject = "Hi"'), r"only the email text"),
    ],
)
def test_front_matter_errors_name_the_file(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    put(tmp_path, "sms/t.en-US.txt.j2", GOOD_HEADER.replace(old, new, 1) + "Hi\n")
    with pytest.raises(TemplateError, match=r"sms/t\.en-US\.txt\.j2.*" + message):
        TemplateSet.load(tmp_path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("line 10\n{{ first_name ", r":11: unexpected end of template"),
        ("line 10\nline 11\n{% if dpd %}\n", r":12: Unexpected end of template"),
        ("{{ first_name|shout }}", r":10: No filter named 'shout'"),
        ("{{ customer_nmae }}", r": unknown variable\(s\) customer_nmae"),
        ('{% include "sms/x.en-US.txt.j2" %}', r":10: templates must be self-contained"),
        ('{% import "m" as m %}', r":10: templates must be self-contained"),
    ],
)
def test_jinja_errors_name_the_file_and_the_line_in_the_file(
    tmp_path: Path, body: str, message: str
) -> None:
    put(tmp_path, "sms/t.en-US.txt.j2", GOOD_HEADER + body)
    with pytest.raises(TemplateError, match=r"sms/t\.en-US\.txt\.j2" + message):
        TemplateSet.load(tmp_path)


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("sms/Early.en-US.txt.j2", r"file name must be"),
        ("sms/t.en-US.html.j2", r"sms templates end in \.txt\.j2"),
        ("letters/t.en-US.txt.j2", r"letter templates end in \.typ\.j2"),
        ("sms/t.xx-QQ-nope.txt.j2", r"unknown locale"),
    ],
)
def test_bad_file_names_are_refused(tmp_path: Path, relative: str, message: str) -> None:
    put(tmp_path, relative, GOOD_HEADER + "Hi\n")
    with pytest.raises(TemplateError, match=message):
        TemplateSet.load(tmp_path)


def email_header(locale: str = "en-US", version: str = "1", subject: str | None = "Hi") -> str:
    lines = [
        "+++",
        'id = "t"',
        f'version = "{version}"',
        'channel = "email"',
        f'locale = "{locale}"',
        'description = "d"',
        'disclosures = ["opt_out"]',
        'approval = "approved"',
    ]
    if subject is not None:
        lines.append(f"subject = '{subject}'")
    return "\n".join([*lines, "+++", ""])


def test_email_needs_both_parts(tmp_path: Path) -> None:
    put(tmp_path, "email/t.en-US.txt.j2", email_header() + "Text\n")
    with pytest.raises(TemplateError, match=r"email/t\.en-US\.html\.j2: missing"):
        TemplateSet.load(tmp_path)


def test_email_text_part_needs_a_subject(tmp_path: Path) -> None:
    put(tmp_path, "email/t.en-US.txt.j2", email_header(subject=None) + "Text\n")
    put(tmp_path, "email/t.en-US.html.j2", email_header(subject=None) + "<p>Html</p>\n")
    with pytest.raises(TemplateError, match=r"t\.en-US\.txt\.j2: the email text part needs"):
        TemplateSet.load(tmp_path)


def test_email_parts_must_agree_on_version(tmp_path: Path) -> None:
    put(tmp_path, "email/t.en-US.txt.j2", email_header() + "Text\n")
    put(tmp_path, "email/t.en-US.html.j2", email_header(version="2", subject=None) + "<p/>\n")
    with pytest.raises(TemplateError, match=r"t\.en-US\.html\.j2: front matter version '2'"):
        TemplateSet.load(tmp_path)


def test_subject_errors_name_the_subject(tmp_path: Path) -> None:
    put(tmp_path, "email/t.en-US.txt.j2", email_header(subject="{{ nope }}") + "Text\n")
    put(tmp_path, "email/t.en-US.html.j2", email_header(subject=None) + "<p/>\n")
    with pytest.raises(TemplateError, match=r"t\.en-US\.txt\.j2#subject: unknown variable"):
        TemplateSet.load(tmp_path)


def test_email_renders_subject_text_and_escaped_html(tmp_path: Path) -> None:
    put(
        tmp_path,
        "email/t.en-US.txt.j2",
        email_header(subject="  Owed: \t {{ balance|money }} ") + "Dear {{ customer_name }}\n",
    )
    put(tmp_path, "email/t.en-US.html.j2", email_header(subject=None) + "<p>{{ stage }}</p>\n")
    templates = TemplateSet.load(tmp_path)
    context = {**sample_context("en-US"), "stage": "<b>&</b>"}
    message = templates.render(ChannelKind.EMAIL, "t", "en-US", context)
    assert message.subject == "Owed: $12,345.67"
    assert message.body == "Dear Margaret Thompson-Whitfield"
    assert message.body_html == "<p>&lt;b&gt;&amp;&lt;/b&gt;</p>\n"


def test_letters_may_not_import_typst_packages(tmp_path: Path) -> None:
    header = GOOD_HEADER.replace('"sms"', '"letter"')
    put(tmp_path, "letters/t.en-US.typ.j2", header + '#import "@preview/cetz:0.3.0"\nHi\n')
    with pytest.raises(TemplateError, match=r"t\.en-US\.typ\.j2: letters must not import"):
        TemplateSet.load(tmp_path)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateSet.load(tmp_path / "nope")


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "sms" / "t.en-US.txt.j2"
    path.parent.mkdir()
    path.write_bytes(GOOD_HEADER.encode() + b"\xff\xfe")
    with pytest.raises(TemplateError, match=r"t\.en-US\.txt\.j2: cannot read as UTF-8"):
        TemplateSet.load(tmp_path)


def test_custom_variable_sets_can_be_allowed(tmp_path: Path) -> None:
    put(tmp_path, "sms/t.en-US.txt.j2", GOOD_HEADER + "{{ extra }}\n")
    templates = TemplateSet.load(tmp_path, variables={"extra"})
    message = templates.render(ChannelKind.SMS, "t", "en-US", {"extra": "yes"})
    assert message.body == "yes"
