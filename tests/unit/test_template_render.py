"""Rendering the shipped templates: escaping per channel, the sandbox, hashes, formats."""

from __future__ import annotations

import hashlib
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from babel.numbers import format_currency

from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.error import TemplateError
from dispatcher.template import TemplateSet, body_digest
from dispatcher.template.escape import typst_escape
from dispatcher.template.sample import sample_context

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"

HOSTILE_NAMES = [
    '#read("/etc/passwd")',
    "*bold* _em_",
    "]",
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "{% raw %}x",
    "$x^2$",
    "@label <lbl>",
    "back\\slash \\n",
    "quote \" and '",
    "שלום",
    "Jane 😀",
    "= Heading",
    "// comment",
    "https://evil.example/?a=1&b=2",
]

# Step day -> DPD, so each sample message reads as it would be sent.
DPD = {
    "pre_due_day3": -3,
    "early_day1": 1,
    "early_day7": 7,
    "early_day15": 15,
    "mid_day1": 31,
    "mid_day15": 45,
    "mid_day30": 60,
    "late_day1": 91,
    "pre_legal_day1": 181,
}


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet.load(TEMPLATES)


def shipped_strategy() -> Strategy:
    with (ROOT / "config" / "strategy.toml").open("rb") as handle:
        return Strategy.model_validate(tomllib.load(handle))


def required() -> list[tuple[ChannelKind, str, str, int]]:
    out = []
    for stage in shipped_strategy().stages:
        for step in stage.steps:
            for locale in ("en-US", "zh-CN"):
                out.append((step.channel, step.template, locale, stage.step_dpd(step)))
    return out


def context_for(locale: str, name: str, **changes: object) -> dict[str, object]:
    context = sample_context(locale, dpd=DPD.get(name, 7))
    context.update(changes)
    return context


@pytest.mark.parametrize(("channel", "name", "locale", "dpd"), required())
def test_every_strategy_step_has_a_template_for_each_shipped_locale(
    templates: TemplateSet, channel: ChannelKind, name: str, locale: str, dpd: int
) -> None:
    assert templates.has(channel, name, locale)
    message = templates.render(channel, name, locale, sample_context(locale, dpd=dpd))
    assert message.template_id == name
    assert message.template_version == "1.0.0"
    assert "Northwind Lending" in message.body  # creditor identity in every message
    if channel is ChannelKind.EMAIL:
        assert message.subject
        assert message.body_html is not None
        assert "Northwind Lending" in message.body_html
        assert "https://northwind.example/unsubscribe/" in message.body
        assert "https://northwind.example/unsubscribe/" in message.body_html
    else:
        assert message.subject is None
        assert message.body_html is None
    if channel is ChannelKind.SMS:
        assert message.body.endswith(
            "Reply STOP to opt out." if locale == "en-US" else "回复STOP退订"
        )
    if channel is ChannelKind.LETTER:
        disclosure = (
            "This is a communication from a debt collector."
            if locale == "en-US"
            else "本函由债务催收方发出"
        )
        assert disclosure in message.body


def test_names_lists_every_template(templates: TemplateSet) -> None:
    names = templates.names()
    assert names == sorted(names)
    assert (ChannelKind.SMS, "early_day1", "zh-CN") in names
    assert len(names) == 2 * (6 + 3 + 3)


GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def sms_units(text: str) -> tuple[str, int]:
    """The encoding an SMS needs and its length in that encoding's units."""
    if all(c in GSM7 or c in GSM7_EXTENSION for c in text):
        return "gsm7", sum(2 if c in GSM7_EXTENSION else 1 for c in text)
    return "ucs2", len(text.encode("utf-16-le")) // 2


SMS_STEPS = sorted({(name, dpd) for c, name, _l, dpd in required() if c is ChannelKind.SMS})


@pytest.mark.parametrize(("name", "dpd"), SMS_STEPS)
def test_sms_fit_two_segments_with_a_realistic_name_and_amount(
    templates: TemplateSet, name: str, dpd: int
) -> None:
    english = templates.render(ChannelKind.SMS, name, "en-US", sample_context("en-US", dpd=dpd))
    encoding, units = sms_units(english.body)
    assert encoding == "gsm7", english.body
    assert units <= 306, english.body
    chinese = templates.render(ChannelKind.SMS, name, "zh-CN", sample_context("zh-CN", dpd=dpd))
    encoding, units = sms_units(chinese.body)
    assert encoding == "ucs2"
    assert units <= 134, chinese.body


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_sms_prints_a_hostile_name_literally(templates: TemplateSet, hostile: str) -> None:
    context = context_for("en-US", "early_day1", first_name=hostile, customer_name=hostile)
    body = templates.render(ChannelKind.SMS, "early_day1", "en-US", context).body
    assert f"Hi {hostile}, we have" in body
    assert "49" not in body  # {{ 7*7 }} inside a value is never evaluated


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_email_text_prints_and_html_escapes_a_hostile_name(
    templates: TemplateSet, hostile: str
) -> None:
    context = context_for("en-US", "mid_day1", customer_name=hostile)
    message = templates.render(ChannelKind.EMAIL, "mid_day1", "en-US", context)
    assert f"Dear {hostile}," in message.body
    assert message.body_html is not None
    escaped = (
        hostile.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
    )
    assert f"Dear {escaped}," in message.body_html
    assert "<script>" not in message.body_html


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
def test_letter_source_carries_a_hostile_name_only_escaped(
    templates: TemplateSet, hostile: str
) -> None:
    context = context_for("en-US", "mid_day15", customer_name=hostile)
    source = templates.render(ChannelKind.LETTER, "mid_day15", "en-US", context).body
    assert f"Dear {typst_escape(hostile)}," in source
    if any(not (c.isalnum() or c == " ") for c in hostile):
        assert f"Dear {hostile}," not in source


def test_subject_is_one_line_even_when_data_has_newlines(templates: TemplateSet) -> None:
    context = context_for("en-US", "mid_day1", account_id="A-1\r\nBcc: victim@example.com")
    message = templates.render(ChannelKind.EMAIL, "mid_day1", "en-US", context)
    assert message.subject is not None
    assert "\n" not in message.subject
    assert "\r" not in message.subject
    assert message.subject.startswith("Your account A-1")


def test_control_and_bidi_override_characters_are_dropped(templates: TemplateSet) -> None:
    context = context_for("en-US", "early_day1", first_name="Ja\u202ene\x07")
    body = templates.render(ChannelKind.SMS, "early_day1", "en-US", context).body
    assert "Hi Jane, we have" in body


@pytest.mark.parametrize(
    ("locale", "currency"),
    [("en-US", "USD"), ("zh-CN", "CNY"), ("en-US", "CNY"), ("zh-CN", "USD")],
)
def test_money_uses_the_template_locale_and_the_account_currency(
    templates: TemplateSet, locale: str, currency: str
) -> None:
    context = context_for(locale, "early_day7", balance=Decimal("1234.5"), currency=currency)
    body = templates.render(ChannelKind.SMS, "early_day7", locale, context).body
    expected = str(format_currency(Decimal("1234.5"), currency, locale=locale.replace("-", "_")))
    assert expected in body


def test_money_formats_are_the_expected_babel_output(templates: TemplateSet) -> None:
    en = templates.render(
        ChannelKind.SMS,
        "early_day7",
        "en-US",
        context_for("en-US", "early_day7", balance=Decimal("1234.5"), currency="USD"),
    )
    zh = templates.render(
        ChannelKind.SMS,
        "early_day7",
        "zh-CN",
        context_for("zh-CN", "early_day7", balance=Decimal("1234.5"), currency="CNY"),
    )
    assert "$1,234.50" in en.body
    assert "¥1,234.50" in zh.body


def test_dates_are_localised(templates: TemplateSet) -> None:
    en = templates.render(ChannelKind.SMS, "early_day1", "en-US", context_for("en-US", "x"))
    zh = templates.render(ChannelKind.SMS, "early_day1", "zh-CN", context_for("zh-CN", "x"))
    assert "Mar 1, 2025" in en.body
    assert "2025年3月1日" in zh.body


def test_body_hash_is_canonical_stable_and_changes_with_the_body(
    templates: TemplateSet,
) -> None:
    context = context_for("en-US", "mid_day1")
    first = templates.render(ChannelKind.EMAIL, "mid_day1", "en-US", context)
    again = templates.render(ChannelKind.EMAIL, "mid_day1", "en-US", dict(context))
    assert first == again
    canonical = json.dumps(
        [first.subject, first.body, first.body_html], ensure_ascii=False, separators=(",", ":")
    )
    assert first.body_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    changed = templates.render(
        ChannelKind.EMAIL, "mid_day1", "en-US", {**context, "balance": Decimal("1.00")}
    )
    assert changed.body_sha256 != first.body_sha256
    assert changed.template_sha256 == first.template_sha256
    # None and "" are different contents.
    assert body_digest(None, "x", None) != body_digest("", "x", None)


def test_template_hash_is_over_the_file_bytes(templates: TemplateSet) -> None:
    sms = templates.render(ChannelKind.SMS, "early_day1", "en-US", context_for("en-US", "x"))
    data = (TEMPLATES / "sms" / "early_day1.en-US.txt.j2").read_bytes()
    assert sms.template_sha256 == hashlib.sha256(data).hexdigest()
    email = templates.render(ChannelKind.EMAIL, "mid_day1", "en-US", context_for("en-US", "x"))
    both = (TEMPLATES / "email" / "mid_day1.en-US.txt.j2").read_bytes() + (
        TEMPLATES / "email" / "mid_day1.en-US.html.j2"
    ).read_bytes()
    assert email.template_sha256 == hashlib.sha256(both).hexdigest()


@pytest.mark.parametrize("spelling", ["zh-CN", "zh-Hans-CN", "zh_CN", "zh_Hans_CN"])
def test_equivalent_locale_tags_find_the_same_template(
    templates: TemplateSet, spelling: str
) -> None:
    assert templates.has(ChannelKind.SMS, "early_day1", spelling)
    message = templates.render(ChannelKind.SMS, "early_day1", spelling, context_for("zh-CN", "x"))
    assert message.body.startswith("【Northwind Lending】")
    assert not templates.has(ChannelKind.SMS, "early_day1", "zh-TW")
    assert not templates.has(ChannelKind.SMS, "early_day1", "not a locale")


def test_missing_template_raises_naming_the_file(templates: TemplateSet) -> None:
    assert not templates.has(ChannelKind.SMS, "early_day1", "fr-FR")
    with pytest.raises(TemplateError, match=r"sms/early_day1\.fr-FR\.txt\.j2"):
        templates.render(ChannelKind.SMS, "early_day1", "fr-FR", context_for("en-US", "x"))


def test_missing_context_variable_raises_naming_file_and_line(templates: TemplateSet) -> None:
    context = context_for("en-US", "early_day1")
    del context["payment_link"]
    with pytest.raises(TemplateError, match=r"early_day1\.en-US\.txt\.j2:10: .*payment_link"):
        templates.render(ChannelKind.SMS, "early_day1", "en-US", context)


def write(root: Path, relative: str, body: str, **front: str) -> Path:
    name, locale = Path(relative).name.split(".")[:2]
    channel = {"sms": "sms", "email": "email", "letters": "letter"}[Path(relative).parts[0]]
    values = {
        "id": name,
        "version": "1",
        "channel": channel,
        "locale": locale,
        "description": "test",
        "approval": "approved",
    }
    values.update(front)
    header = "\n".join(f'{k} = "{v}"' for k, v in values.items())
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"+++\n{header}\ndisclosures = []\n+++\n{body}", encoding="utf-8")
    return path


def test_unknown_attribute_raises_at_render_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "sms/t.en-US.txt.j2", "Hi\n{{ creditor.nmae }}\n")
    templates = TemplateSet.load(tmp_path)
    with pytest.raises(TemplateError, match=r"t\.en-US\.txt\.j2:11: UndefinedError.*nmae"):
        templates.render(ChannelKind.SMS, "t", "en-US", context_for("en-US", "x"))


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "creditor.__class__.__init__.__globals__",
        "account_id.__class__.__subclasses__()",
        "address_lines.append('x')",
        "creditor.__post_init__()",
    ],
)
def test_sandbox_refuses_unsafe_access(tmp_path: Path, expression: str) -> None:
    write(tmp_path, "sms/t.en-US.txt.j2", "{{ " + expression + " }}")
    templates = TemplateSet.load(tmp_path)
    with pytest.raises(TemplateError, match=r"t\.en-US\.txt\.j2:10: SecurityError"):
        templates.render(ChannelKind.SMS, "t", "en-US", context_for("en-US", "x"))


def test_sms_output_is_plain_normalised_text(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sms/t.en-US.txt.j2",
        "\n\n  {{ first_name }}   \n{% if dpd > 0 %}\nlate  \n{% endif %}\n\n",
    )
    templates = TemplateSet.load(tmp_path)
    body = templates.render(ChannelKind.SMS, "t", "en-US", context_for("en-US", "x")).body
    assert body == "  Margaret\nlate"
