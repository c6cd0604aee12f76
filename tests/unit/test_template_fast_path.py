"""The renderer's fast paths give exactly what the generic paths give.

Rendering is on the hot path of every plan (docs/BENCHMARKS.md, `bench render`), so three
steps take shortcuts: money is formatted from a shape learnt from babel, the creditor's
fields skip the sandbox's generic attribute checks and remember their escaped HTML, and
the body digest writes its JSON without an encoder object. Each shortcut must be
invisible: these tests compare it with the slow path it replaces, over generated data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest
from babel import Locale
from babel.numbers import format_currency
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from dispatcher.domain.strategy import ChannelKind
from dispatcher.template import TemplateSet, body_digest
from dispatcher.template.context import Creditor
from dispatcher.template.escape import (
    _TYPST_SPECIAL,
    _UNSAFE,
    _typst_char,
    html_value,
    strip_unsafe,
    typst_escape,
)
from dispatcher.template.filter import MoneyShape, make_filters
from dispatcher.template.renderer import _record_fields, _Sandbox
from dispatcher.template.sample import SAMPLE_CREDITOR, sample_context

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Shipped locales first, then ones whose formats differ in every way babel knows:
# symbol after the number, other separators, right-to-left marks, no decimals.
LOCALES = [
    "en-US",
    "zh-CN",
    "de-DE",
    "fr-FR",
    "pl-PL",
    "ar-EG",
    "ja-JP",
    "en-GB",
    "pt-BR",
    "hi-IN",
    "de-CH",
    "fa-IR",
    "he-IL",
    "sv-SE",
    "es-ES",
    "bn-BD",
]
CURRENCIES = ["USD", "EUR", "CNY", "JPY", "KWD", "GBP", "INR", "CHF"]

amounts = st.decimals(
    min_value=Decimal("-1e13"), max_value=Decimal("1e13"), allow_nan=False, places=4
) | st.integers(min_value=-(10**12), max_value=10**12).map(Decimal)


@settings(max_examples=400, deadline=None)
@given(locale=st.sampled_from(LOCALES), currency=st.sampled_from(CURRENCIES), value=amounts)
def test_money_filter_writes_exactly_what_babel_writes(
    locale: str, currency: str, value: Decimal
) -> None:
    money = make_filters(locale)["money"]

    class _Context:
        @staticmethod
        def resolve_or_missing(name: str) -> str:
            return currency

    expected = format_currency(value, currency, locale=Locale.parse(locale, sep="-"))
    assert money(_Context(), value) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("1E+30")])
def test_money_shape_declines_what_it_cannot_write(value: Decimal) -> None:
    shape = MoneyShape.learn(Locale.parse("en_US"), "USD")
    assert shape is not None
    assert shape.format(value) is None  # babel decides what such an amount gives


def test_locales_babel_groups_otherwise_are_left_to_babel() -> None:
    # Indian grouping (12,34,567.00) is not the three-by-three shape.
    assert MoneyShape.learn(Locale.parse("hi_IN"), "INR") is None
    assert MoneyShape.learn(Locale.parse("en_US"), "USD") is not None


@cache
def shipped_templates() -> TemplateSet:
    return TemplateSet.load(TEMPLATES)


creditor_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
)


@settings(max_examples=150, deadline=None)
@given(name=creditor_text, phone=creditor_text, street=creditor_text)
@example(name="<b>A&B</b>", phone="'1'", street='"\u202e"')
def test_creditor_fields_read_and_escape_as_the_generic_sandbox_does(
    name: str, phone: str, street: str
) -> None:
    creditor = replace(SAMPLE_CREDITOR, name=name, phone=phone, address_lines=(street, "x"))
    fast = _Sandbox()
    generic = ImmutableSandboxedEnvironment()
    fields = _record_fields(creditor)
    for field in ("name", "phone", "email", "website", "address_lines", "payment_url"):
        value = fast.getattr(creditor, field)
        assert value == generic.getattr(creditor, field)
        assert value is fields[field]
    for text in (fields["name"], fields["phone"], *fields["address_lines"]):  # type: ignore[misc]
        assert str(escape(text)) == str(escape(html_value(str(text))))


@settings(max_examples=60, deadline=None)
@given(name=creditor_text)
@example(name="<script>alert('x')</script> & \"Co\"")
@example(name="<b>Bidi</b> \u202e")
def test_an_email_with_a_hostile_creditor_renders_as_with_plain_strings(name: str) -> None:
    templates = shipped_templates()
    creditor = replace(SAMPLE_CREDITOR, name=name)
    fast = templates.render(
        ChannelKind.EMAIL, "mid_day1", "en-US", sample_context("en-US", creditor=creditor)
    )
    # The same creditor as a plain mapping takes the sandbox's generic item path.
    plain = {field: getattr(creditor, field) for field in Creditor.__dataclass_fields__}
    slow = templates.render(
        ChannelKind.EMAIL,
        "mid_day1",
        "en-US",
        {**sample_context("en-US", creditor=creditor), "creditor": plain},
    )
    assert (fast.subject, fast.body, fast.body_html) == (slow.subject, slow.body, slow.body_html)


def test_a_creditor_method_still_takes_the_checked_path() -> None:
    method = _Sandbox().getattr(SAMPLE_CREDITOR, "opt_out_sms_for")
    assert method("zh-CN") == SAMPLE_CREDITOR.opt_out_sms_for("zh-CN")
    assert "__class__" not in _record_fields(SAMPLE_CREDITOR)


parts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(subject=st.none() | parts, body=parts, html=st.none() | parts)
def test_body_digest_is_sha256_of_the_documented_json(
    subject: str | None, body: str, html: str | None
) -> None:
    canonical = json.dumps([subject, body, html], ensure_ascii=False, separators=(",", ":"))
    assert body_digest(subject, body, html) == hashlib.sha256(canonical.encode()).hexdigest()


any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(text=any_text)
@example(text="Jane Doe 42")
@example(text="a_b")
@example(text="x\u202ey")
@example(text="٣ ½ Ⅻ")
def test_escape_shortcuts_give_what_the_patterns_give(text: str) -> None:
    assert strip_unsafe(text) == _UNSAFE.sub("", text)
    assert typst_escape(text) == _TYPST_SPECIAL.sub(_typst_char, _UNSAFE.sub("", text))
