"""The renderer's fast paths give exactly what the generic paths give.

Rendering is on the hot path of every plan (docs/BENCHMARKS.md, `bench render`), so steps
take shortcuts: money is formatted from a shape learnt from babel, the creditor's fields
skip the sandbox's generic attribute checks and remember their escaped HTML, each part is
compiled once more per creditor with the creditor's values written in, the body digest
writes its JSON without an encoder object, and a few lookups remember their last answer
(the date filter, the creditor's opt-out line, the local date of one `now`). Each shortcut
must be invisible: these tests compare it with the slow path it replaces, over generated
data, and change the data between renders so that no memo can outlive it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jinja2 import StrictUndefined, pass_context
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from dispatcher.domain.staging import local_date
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError
from dispatcher.template import TemplateSet, body_digest
from dispatcher.template.context import (
    _HONORIFICS,
    VARIABLES,
    Creditor,
    build_context,
    first_name,
)
from dispatcher.template.escape import (
    _TYPST_SPECIAL,
    _UNSAFE,
    TypstCode,
    _typst_char,
    html_value,
    normalise_text,
    single_line,
    strip_unsafe,
    text_value,
    typst_escape,
    typst_string,
    typst_value,
)
from dispatcher.template.filter import DATE_FORMATS, MoneyShape, make_filters
from dispatcher.template.front_matter import split_front_matter
from dispatcher.template.renderer import (
    _creditor_values,
    _json_content,
    _json_pieces,
    _Loader,
    _record_fields,
    _run,
    _Sandbox,
    _strip_edges,
)
from dispatcher.template.sample import SAMPLE_CREDITOR, sample_account, sample_context

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)

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
@example(text='$1,234.56 #read("/etc/passwd") *b* ]\t\n')
def test_escape_shortcuts_give_what_the_patterns_give(text: str) -> None:
    assert strip_unsafe(text) == _UNSAFE.sub("", text)
    assert typst_escape(text) == _TYPST_SPECIAL.sub(_typst_char, _UNSAFE.sub("", text))


@settings(max_examples=500, deadline=None)
@given(text=st.text(st.characters(max_codepoint=127), max_size=40))
def test_the_ascii_translation_escapes_what_the_pattern_escapes(text: str) -> None:
    """Amounts, e-mail addresses, links and most addresses take the str.translate path."""
    assert typst_escape(text) == _TYPST_SPECIAL.sub(_typst_char, _UNSAFE.sub("", text))


# --- Every part as stock Jinja renders it ----------------------------------------------
# The renderer compiles each {{ value }} to one call of its own (_SlotCode), hands the
# context to Jinja as it is unless the template names a Jinja global, and writes the
# digest's JSON on bytes. The reference below does none of that: a stock sandbox with the
# documented options (docs/TEMPLATES.md), Template.render (a fresh context merged with the
# globals), and json.dumps for the digest. Every message must come out the same.

_FINALIZE = {"text": text_value, "html": html_value, "typst": typst_value}


def _babel_filters(locale: str) -> dict[str, object]:
    """The documented filters, straight from babel: no shapes, caches or memos."""
    loc = Locale.parse(locale, sep="-")

    @pass_context
    def money(context: object, value: Decimal, currency: str | None = None) -> str:
        code = currency or context.resolve_or_missing("currency")  # type: ignore[attr-defined]
        return str(format_currency(value, code, locale=loc))

    def date_(value: date, format: str = "medium") -> str:
        return str(format_date(value, format=format, locale=loc))

    def number(value: Decimal) -> str:
        return str(format_decimal(value, locale=loc))

    return {"money": money, "date": date_, "number": number}


def _stock_environment(kind: str, locale: str) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=kind == "html",
        finalize=_FINALIZE[kind],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(_babel_filters(locale))
    if kind == "typst":
        env.filters["typst_string"] = typst_string
    return env


def reference_render(
    templates: TemplateSet, channel: ChannelKind, name: str, locale: str, context: dict[str, object]
) -> tuple[str | None, str, str | None, str]:
    """(subject, body, html, body_sha256) as stock Jinja and json.dumps give them."""
    info = templates.info(channel, name, locale)
    subject = html = None
    body = ""
    for path, text in zip(info.files, info.texts, strict=True):
        front, source = split_front_matter(text, str(path))
        part = path.name.split(".")[-2]
        kind = {"txt": "text", "html": "html", "typ": "typst"}[part]
        out = _stock_environment(kind, locale).from_string(source).render(context)
        if part == "html":
            html = out.strip() + "\n"
        elif part == "typ":
            body = out.strip() + "\n"
        else:
            body = normalise_text(out)
        if front.subject is not None:
            raw = _stock_environment("text", locale).from_string(front.subject).render(context)
            subject = single_line(raw)
    canonical = json.dumps([subject, body, html], ensure_ascii=False, separators=(",", ":"))
    return subject, body, html, hashlib.sha256(canonical.encode()).hexdigest()


def rendered(
    templates: TemplateSet, channel: ChannelKind, name: str, locale: str, context: dict[str, object]
) -> tuple[str | None, str, str | None, str]:
    message = templates.render(channel, name, locale, context)
    return message.subject, message.body, message.body_html, message.body_sha256


hostile = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
) | st.sampled_from(
    [
        "<script>alert('x')</script>",
        'O\'Brien & "Sons" <b>',
        "a\tb\nc\r\n\x0b\x1f\x7f\x85 d",
        "\u202eevil\u2066 \u061c",
        '#read("/etc/passwd") $x$ *b* _u_ \\ {{ 7*7 }}',
        "Zoë 李小龍 Nguyễn \u00a0\u202f",
        "{% raw %}",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(shipped_templates().names()),
    name=hostile,
    account_id=hostile,
    link=hostile,
    creditor_name=hostile,
    balance=amounts,
    dpd=st.integers(min_value=-30, max_value=400),
)
@example(
    key=(ChannelKind.EMAIL, "mid_day1", "en-US"),
    name="<b>A&B</b> \u202e",
    account_id='"x"\\',
    link="javascript:alert('1')",
    creditor_name="N & W <Lending>",
    balance=Decimal("-0"),
    dpd=31,
)
def test_every_shipped_template_renders_as_stock_jinja_renders_it(
    key: tuple[ChannelKind, str, str],
    name: str,
    account_id: str,
    link: str,
    creditor_name: str,
    balance: Decimal,
    dpd: int,
) -> None:
    channel, template, locale = key
    creditor = replace(SAMPLE_CREDITOR, name=creditor_name, address_lines=(creditor_name, "1"))
    context = sample_context(locale, creditor=creditor)
    context.update(
        customer_name=name,
        first_name=name,
        account_id=account_id,
        payment_link=link,
        unsubscribe_link=link,
        balance=balance,
        dpd=dpd,
        days_overdue=max(dpd, 0),
        days_until_due=max(-dpd, 0),
    )
    templates = shipped_templates()
    assert rendered(templates, channel, template, locale, context) == reference_render(
        templates, channel, template, locale, context
    )


# Jinja constructs the shipped templates do not use, each of which the slot calls, the
# shared context or the globals must get right: blocks that buffer their output, autoescape
# switched off (statically and at run time), |safe and |e, constants, Jinja's globals,
# values that are not strings, and the sandbox's checked path (a record's method).
_TRICKY_BODY = """\
{% set greeting %}Dear <{{ customer_name }}>{% endset %}
{{ greeting }} / {{ greeting|upper }}
{% macro box(x) %}[{{ x }}]{% endmacro %}
{% macro wrap(x) %}[{{ x }}|{{ caller() }}]{% endmacro %}
{{ box(account_id) }}
{% call wrap(customer_name) %}in call {{ payment_link }}{% endcall %}
{% filter upper %}filtered {{ customer_name }}{% endfilter %}
{% autoescape false %}raw {{ customer_name }} {{ "<i>" }}{% endautoescape %}
{% autoescape customer_name != "" %}maybe {{ customer_name }}{% endautoescape %}
{% autoescape true %}on {{ customer_name }} {{ customer_name|safe }} {{ dpd }}{% endautoescape %}
safe {{ customer_name|safe }} e {{ customer_name|e }} const {{ 1 + 2 }} {{ "<b>" ~ "&" }}
{% for n in range(3) %}{{ loop.index }}:{{ n }} {% endfor %}{{ dict(a=customer_name) }}
{{ balance }} {{ balance|money }} {{ dpd }} {{ dpd > 3 }} {{ due_date }} {{ due_date|date }}
{{ address_lines }} {{ creditor.address_lines|join(" | ") }} {{ creditor.name }}
{{ creditor.opt_out_sms_for(locale) }} {{ [customer_name, dpd] }} {{ none }}
{% set n = namespace(v=customer_name) %}{{ n.v }}
{% block b %}in block {{ customer_name }} {{ creditor.name }}{% endblock %}
{% for x in [[customer_name]] recursive %}{{ x if x is string else loop(x) }}{% endfor %}
"""
_NO_GLOBALS_BODY = """\
Dear {{ customer_name }} <{{ account_id }}>, {{ balance|money }} due {{ due_date|date("long") }}.
{% set range = [account_id] %}{% for x in range %}{{ x }}{% endfor %} {{ creditor.name }}
"""


def _tricky_templates(root: Path) -> TemplateSet:
    header = (
        '+++\nid = "{name}"\nversion = "1"\nchannel = "{channel}"\nlocale = "en-US"\n'
        'description = "d"\ndisclosures = []\napproval = "draft"\n{subject}+++\n'
    )
    subject = "subject = '{{ customer_name }} {{ range(2)|list }} {{ dpd }}'\n"
    for name, body in (("tricky", _TRICKY_BODY), ("plain", _NO_GLOBALS_BODY)):
        for folder, channel, part, extra in (
            ("sms", "sms", "txt", ""),
            ("email", "email", "txt", subject),
            ("email", "email", "html", ""),
            ("letters", "letter", "typ", ""),
        ):
            path = root / folder / f"{name}.en-US.{part}.j2"
            path.parent.mkdir(parents=True, exist_ok=True)
            front = header.format(name=name, channel=channel, subject=extra)
            path.write_text(front + body, encoding="utf-8")
    return TemplateSet.load(root)


@cache
def tricky_templates() -> TemplateSet:
    import tempfile

    return _tricky_templates(Path(tempfile.mkdtemp(prefix="tricky-templates-")))


@settings(max_examples=100, deadline=None)
@given(
    channel=st.sampled_from([ChannelKind.SMS, ChannelKind.EMAIL, ChannelKind.LETTER]),
    name=st.sampled_from(["tricky", "plain"]),
    customer=hostile,
    creditor_name=hostile,
    balance=amounts,
)
@example(
    channel=ChannelKind.EMAIL,
    name="tricky",
    customer="",
    creditor_name="<b>",
    balance=Decimal("1"),
)
def test_jinja_constructs_render_as_stock_jinja_renders_them(
    channel: ChannelKind, name: str, customer: str, creditor_name: str, balance: Decimal
) -> None:
    creditor = replace(SAMPLE_CREDITOR, name=creditor_name, address_lines=("a", creditor_name))
    context = sample_context("en-US", creditor=creditor)
    context.update(customer_name=customer, balance=balance)
    templates = tricky_templates()
    assert rendered(templates, channel, name, "en-US", context) == reference_render(
        templates, channel, name, "en-US", context
    )


def test_only_templates_that_name_a_jinja_global_get_the_globals(tmp_path: Path) -> None:
    templates = _tricky_templates(tmp_path)
    uses_range = templates._get(ChannelKind.EMAIL, "tricky", "en-US")
    shadowed = templates._get(ChannelKind.EMAIL, "plain", "en-US")
    assert uses_range.body.globals is not None and "range" in uses_range.body.globals
    assert uses_range.subject is not None and uses_range.subject.globals is not None
    # `range` set by the template itself still counts as naming it: merged, harmlessly.
    assert shadowed.body.globals is not None
    shipped = shipped_templates()._get(ChannelKind.EMAIL, "mid_day1", "en-US")
    assert shipped.body.globals is None and shipped.html is not None
    assert shipped.html.globals is None
    # Shared or merged, the caller's context is never written to.
    context = sample_context("en-US")
    before = dict(context)
    templates.render(ChannelKind.EMAIL, "tricky", "en-US", context)
    shipped_templates().render(ChannelKind.EMAIL, "mid_day1", "en-US", context)
    assert context == before


@pytest.mark.parametrize("kind", ["text", "html"])
def test_an_undefined_value_still_fails_in_the_slot(kind: str, tmp_path: Path) -> None:
    part = "html" if kind == "html" else "txt"
    line = 0
    for p, extra in (("txt", "subject = 'S'\n"), ("html", "")):
        front = (
            '+++\nid = "t"\nversion = "1"\nchannel = "email"\nlocale = "en-US"\n'
            f'description = "d"\ndisclosures = []\napproval = "draft"\n{extra}+++\n'
        )
        # One run of output over three lines: the error is still placed on its own line.
        body = "Hi {{ customer_name }},\nyour {{ account_id }}\n"
        if p == part:
            body += "and {{ creditor.nope }}.\n"
            line = front.count("\n") + 3
        path = tmp_path / "email" / f"t.en-US.{p}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(front + body, encoding="utf-8")
    templates = TemplateSet.load(tmp_path)
    with pytest.raises(TemplateError, match=rf"t\.en-US\.{part}\.j2:{line}: UndefinedError"):
        templates.render(ChannelKind.EMAIL, "t", "en-US", sample_context("en-US"))


slot_values = (
    hostile
    | amounts
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
    | st.dates()
    | hostile.map(Markup)
    | hostile.map(TypstCode)
    | st.lists(hostile, max_size=3)
)


@settings(max_examples=500, deadline=None)
@given(kind=st.sampled_from(["text", "html", "typst"]), value=slot_values)
@example(kind="html", value=_record_fields(SAMPLE_CREDITOR)["name"])
@example(kind="html", value=True)
@example(kind="text", value=_record_fields(SAMPLE_CREDITOR)["name"])
def test_slots_give_what_jinjas_output_expressions_give(kind: str, value: object) -> None:
    env = _Sandbox(finalize=_FINALIZE[kind], autoescape=kind == "html")
    finalize = _FINALIZE[kind]
    assert env.plain_slot(value) == str(finalize(value))
    assert str(env.escaped_slot(value)) == str(escape(finalize(value)))


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(hostile, min_size=0, max_size=3),
    separator=st.sampled_from([", ", " & ", "<br>", ""]),
    autoescape=st.booleans(),
    again=st.booleans(),
)
def test_join_remembers_only_what_it_may(
    lines: list[str], separator: str, autoescape: bool, again: bool
) -> None:
    env = _Loader(TEMPLATES, frozenset()).environment("html" if autoescape else "text", "en-US")
    stock = ImmutableSandboxedEnvironment(autoescape=autoescape).filters["join"]
    eval_ctx = EvalContext(env)
    record = replace(SAMPLE_CREDITOR, address_lines=tuple(lines))
    value = _record_fields(record)["address_lines"]
    join = env.filters["join"]
    for sep in (separator, separator, "; "):
        for item in (value, tuple(map(str, value)), list(value)):
            got = join(eval_ctx, item, sep)
            assert type(got) is type(stock(eval_ctx, item, sep))
            assert got == stock(eval_ctx, item, sep)
        if again:
            eval_ctx.autoescape = not eval_ctx.autoescape
    # A list of the same texts may change between two calls: never remembered.
    texts = list(value)
    join(eval_ctx, texts, separator)
    texts.append(_record_fields(SAMPLE_CREDITOR)["name"])
    assert join(eval_ctx, texts, separator) == stock(eval_ctx, texts, separator)


def _first_name_by_pattern(full_name: str) -> str:
    """first_name as it was written with the whitespace pattern (the slow path)."""
    name = re.sub(r"\s+", " ", full_name).strip()
    if "," in name:
        family, _, given = name.partition(",")
        name = given.strip() or family.strip()
    parts = name.split(" ")
    while len(parts) > 1 and parts[0].lower() in _HONORIFICS:
        parts = parts[1:]
    return parts[0] if parts else ""


names = st.lists(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
    | st.sampled_from([" ", "\t", "\n", "\u3000", "\xa0", "\x1c", "\x85", "\u2028", ",", "Dr."]),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(full_name=names)
@example(full_name="  Dr.\u3000 Jane\t\nDoe ")
@example(full_name="Doe ,\x1c Jane")
def test_names_are_normalised_as_the_whitespace_pattern_does(full_name: str) -> None:
    account = replace(sample_account("en-US"), full_name=full_name)
    context = build_context(account, dpd=3, stage_id="early", creditor=SAMPLE_CREDITOR, now=NOW)
    assert context["customer_name"] == re.sub(r"\s+", " ", full_name).strip()
    assert context["first_name"] == first_name(full_name) == _first_name_by_pattern(full_name)


def test_the_whitespace_pattern_is_str_isspace() -> None:
    # What makes split() and the pattern agree: the same set of whitespace characters.
    pattern = re.compile(r"\s")
    for code in range(sys.maxunicode + 1):
        if not 0xD800 <= code <= 0xDFFF:
            char = chr(code)
            assert bool(pattern.fullmatch(char)) == char.isspace(), hex(code)


def _normalise_text_by_lines(text: str) -> str:
    """normalise_text as it was first written: strip each line, drop blank end lines."""
    lines = [line.rstrip() for line in text.split("\n")]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return "\n".join(lines[start:end])


@settings(max_examples=500, deadline=None)
@given(text=names)
@example(text="\n \n\tHi  \n\n there \u3000\n\n\n")
@example(text="\u2028\n")
def test_text_finishers_give_what_their_first_versions_gave(text: str) -> None:
    assert normalise_text(text) == _normalise_text_by_lines(text)
    assert single_line(text) == re.sub(r"\s+", " ", text).strip()


# --- What is remembered per creditor, per now, per date --------------------------------
# The renderer writes the creditor's values into each part's template (per creditor), the
# context remembers the creditor's opt-out line, local_date the date of one `now` per
# zone, and the date filter its last answer. None of it may outlive the data it was made
# from: each test below changes the data between renders and compares with the slow path.


def test_creditor_values_are_written_in_only_where_the_creditor_decides_them() -> None:
    shipped = shipped_templates()._get(ChannelKind.EMAIL, "mid_day1", "en-US")
    assert shipped.body.by_creditor is not None and shipped.html is not None
    assert shipped.html.by_creditor is not None
    assert shipped.subject is not None and shipped.subject.by_creditor is None  # none there
    env = _Loader(TEMPLATES, frozenset()).environment("html", "en-US")

    def slots(source: str) -> list[str]:
        tree = env.parse(source)
        return [type(output.nodes[i]).__name__ for output, i in _creditor_values(tree)]

    assert slots('{{ creditor.name }} {{ creditor.address_lines|join(", ") }}') == [
        "Getattr",
        "Filter",
    ]
    # Not the creditor's alone: a method call, another filter, a variable separator,
    # another name, and any slot inside a block, a macro or an autoescape switch.
    assert not slots(
        "{{ creditor.opt_out_sms_for(locale) }} {{ creditor.name|upper }} "
        "{{ creditor.address_lines|join(account_id) }} {{ creditor.nope }} {{ customer_name }}"
        "{% if dpd %}{{ creditor.name }}{% endif %}{% macro m() %}{{ creditor.name }}{% endmacro %}"
        "{% autoescape false %}{{ creditor.name }}{% endautoescape %}"
    )
    # A template that could give `creditor` another meaning is left alone entirely.
    for rebinding in (
        "{% set creditor = customer_name %}",
        "{% for creditor in [1] %}{% endfor %}",
        "{% macro m(creditor) %}{% endmacro %}",
        "{% with creditor = 1 %}{% endwith %}",
    ):
        assert not slots("{{ creditor.name }}" + rebinding), rebinding


_SHADOW_BODY = """\
{{ creditor.name }} {{ creditor.phone }}
{% set creditor = {"name": customer_name} %}{{ creditor.name }}
"""


def test_a_template_that_rebinds_creditor_renders_as_stock_jinja(tmp_path: Path) -> None:
    for folder, part, extra in (
        ("email", "txt", "subject = 'S {{ creditor.name }}'\n"),
        ("email", "html", ""),
    ):
        path = tmp_path / folder / f"shadow.en-US.{part}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            '+++\nid = "shadow"\nversion = "1"\nchannel = "email"\nlocale = "en-US"\n'
            f'description = "d"\ndisclosures = []\napproval = "draft"\n{extra}+++\n' + _SHADOW_BODY,
            encoding="utf-8",
        )
    templates = TemplateSet.load(tmp_path)
    compiled = templates._get(ChannelKind.EMAIL, "shadow", "en-US")
    assert compiled.body.by_creditor is None
    context = sample_context("en-US")
    context["customer_name"] = "<Jane>"
    got = rendered(templates, ChannelKind.EMAIL, "shadow", "en-US", context)
    assert got == reference_render(templates, ChannelKind.EMAIL, "shadow", "en-US", context)
    assert got[1].splitlines() == ["Northwind Lending +1 800 555 0199", "<Jane>"]


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(hostile, min_size=1, max_size=4),
    order=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=12),
    key=st.sampled_from(shipped_templates().names()),
)
def test_creditor_templates_follow_the_creditor_from_message_to_message(
    names: list[str], order: list[int], key: tuple[ChannelKind, str, str]
) -> None:
    # Creditors come and go in any order, some equal but distinct objects, one changed
    # under a name another had: each message is what stock Jinja makes of its own.
    channel, template, locale = key
    creditors = [
        replace(SAMPLE_CREDITOR, name=name, address_lines=(name, f"{i}"), phone=f"+{i}")
        for i, name in enumerate(names)
    ]
    creditors += [replace(creditor) for creditor in creditors]  # equal, not the same
    templates = shipped_templates()
    for index in order:
        creditor = creditors[index % len(creditors)]
        context = sample_context(locale, creditor=creditor)
        assert rendered(templates, channel, template, locale, context) == reference_render(
            templates, channel, template, locale, context
        )


def test_a_creditor_like_record_takes_the_generic_path() -> None:
    class Branch(Creditor):
        pass

    templates = shipped_templates()
    branch = Branch(**{f: getattr(SAMPLE_CREDITOR, f) for f in Creditor.__dataclass_fields__})
    branch = replace(branch, name="Branch <Office>")
    for creditor in (branch, SAMPLE_CREDITOR, branch):
        context = sample_context("en-US", creditor=creditor)
        got = rendered(templates, ChannelKind.EMAIL, "mid_day1", "en-US", context)
        assert got == reference_render(templates, ChannelKind.EMAIL, "mid_day1", "en-US", context)
    assert "Branch &lt;Office&gt;" in str(got[2])


def test_an_error_in_a_part_with_creditor_values_still_names_its_line(tmp_path: Path) -> None:
    front = (
        '+++\nid = "t"\nversion = "1"\nchannel = "email"\nlocale = "en-US"\n'
        'description = "d"\ndisclosures = []\napproval = "draft"\n{extra}+++\n'
    )
    body = "{{ creditor.name }}\n{{ creditor.address_lines|join(', ') }}\nand {{ nope.x }}\n"
    for part, extra in (("txt", "subject = 'S'\n"), ("html", "")):
        path = tmp_path / "email" / f"t.en-US.{part}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(front.format(extra=extra) + body, encoding="utf-8")
    templates = TemplateSet.load(tmp_path, variables={*VARIABLES, "nope"})
    assert templates._get(ChannelKind.EMAIL, "t", "en-US").body.by_creditor is not None
    line = front.format(extra="subject = 'S'\n").count("\n") + 3
    for _ in range(2):  # the generic template first, then the creditor's own
        with pytest.raises(TemplateError, match=rf"t\.en-US\.txt\.j2:{line}: UndefinedError"):
            templates.render(ChannelKind.EMAIL, "t", "en-US", sample_context("en-US"))


@settings(max_examples=300, deadline=None)
@given(text=names | st.sampled_from(["", "\n", "a", " a\n", "a \n", "a\n\n", "<p>\n", "\u3000x\n"]))
def test_the_html_finisher_keeps_only_text_it_would_not_change(text: str) -> None:
    assert _strip_edges(text) == text.strip() + "\n"


@settings(max_examples=200, deadline=None)
@given(
    instants=st.lists(
        st.datetimes(
            min_value=datetime(2020, 1, 1),
            max_value=datetime(2030, 1, 1),
            timezones=st.sampled_from([UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")]),
        ),
        min_size=1,
        max_size=4,
    ),
    zones=st.lists(
        st.sampled_from(["UTC", "America/New_York", "Pacific/Kiritimati", "Asia/Shanghai"]),
        min_size=1,
        max_size=6,
    ),
)
def test_local_dates_follow_now_and_zone(instants: list[datetime], zones: list[str]) -> None:
    for now in instants:
        for zone in zones:
            assert local_date(now, zone) == now.astimezone(ZoneInfo(zone)).date()


def test_local_date_tells_apart_equal_instants_of_a_repeated_hour() -> None:
    # 01:30 on 2026-11-01 happens twice in New York; the two datetimes compare equal, but
    # an hour apart (05:30 and 06:30 UTC) they fall on either side of midnight in Regina
    # (UTC-6, no daylight saving time).
    zone = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second
    for now in (first, second, first):
        assert local_date(now, "America/Regina") == (
            now.astimezone(ZoneInfo("America/Regina")).date()
        )
    assert local_date(first, "America/Regina") != local_date(second, "America/Regina")
    with pytest.raises(ValueError, match="aware"):
        local_date(datetime(2026, 1, 1), "UTC")


@settings(max_examples=100, deadline=None)
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(["zh-CN", "zh_Hans_CN", "fr-FR", "en-US"]), hostile),
        max_size=3,
    ),
    locales=st.lists(st.sampled_from(["zh-CN", "zh-Hans-CN", "fr-FR", "de-DE", "xx"]), max_size=5),
)
def test_the_opt_out_line_follows_the_creditor(
    overrides: list[tuple[str, str]], locales: list[str]
) -> None:
    creditors = [SAMPLE_CREDITOR, replace(SAMPLE_CREDITOR, opt_out_sms_by_locale=tuple(overrides))]
    account = sample_account("en-US")
    for creditor in (*creditors, *reversed(creditors)):
        for locale in locales:
            context = build_context(
                replace(account, locale=locale), dpd=3, stage_id="early", creditor=creditor, now=NOW
            )
            assert context["opt_out"] == creditor.opt_out_sms_for(locale)


@settings(max_examples=200, deadline=None)
@given(
    days=st.lists(st.dates() | st.datetimes(), min_size=1, max_size=6),
    formats=st.lists(st.sampled_from(sorted(DATE_FORMATS)), min_size=1, max_size=3),
    locale=st.sampled_from(["en-US", "zh-CN", "de-DE"]),
)
def test_the_date_filter_remembers_only_the_same_date(
    days: list[date], formats: list[str], locale: str
) -> None:
    date_filter = make_filters(locale)["date"]
    loc = Locale.parse(locale, sep="-")
    for day in [*days, *days]:  # each again, and equal dates as new objects
        for format in formats:
            expected = format_date(day, format=format, locale=loc)
            assert date_filter(day, format) == expected
            copy = date(day.year, day.month, day.day)
            assert date_filter(copy, format) == format_date(copy, format=format, locale=loc)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.tuples(parts, st.booleans()), max_size=8),
)
@example(pieces=[('<a href="x">', True), ('"\\\n\t\x00\x1f', False), ("李 \u2028", True)])
def test_the_json_of_the_pieces_is_the_json_of_the_whole(pieces: list[tuple[str, bool]]) -> None:
    texts = tuple(text for text, _ in pieces)
    consts = tuple(_json_content(text) if const else None for text, const in pieces)
    whole = json.dumps("".join(texts), ensure_ascii=False).encode()
    assert _json_pieces(texts, consts) == whole


_FLAT_HTML = """\
{edge}<p title="{{{{ account_id }}}}">Dear {{{{ customer_name }}}} \\ "{{{{ customer_name|safe }}}}"
{{{{ creditor.name }}}} {{{{ balance|money }}}}</p>{tail}
"""


@settings(max_examples=60, deadline=None)
@given(customer=hostile, account_id=hostile, edge=st.sampled_from(["", "  ", "\n"]))
@example(customer='a\x00b\x1f"\\', account_id="\t", edge="")
def test_a_flat_html_part_digests_as_json_dumps_does(
    customer: str, account_id: str, edge: str
) -> None:
    templates = flat_templates(edge)
    compiled = templates._get(ChannelKind.EMAIL, "flat", "en-US")
    assert compiled.html is not None and compiled.html.flat
    context = sample_context("en-US")
    context.update(customer_name=customer, account_id=account_id)
    assert rendered(templates, ChannelKind.EMAIL, "flat", "en-US", context) == reference_render(
        templates, ChannelKind.EMAIL, "flat", "en-US", context
    )


@cache
def flat_templates(edge: str) -> TemplateSet:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="flat-templates-"))
    front = (
        '+++\nid = "flat"\nversion = "1"\nchannel = "email"\nlocale = "en-US"\n'
        'description = "d"\ndisclosures = []\napproval = "draft"\n{extra}+++\n'
    )
    for part, extra in (("txt", "subject = 'S'\n"), ("html", "")):
        path = root / "email" / f"flat.en-US.{part}.j2"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = _FLAT_HTML.format(edge=edge, tail=" " if edge else "")
        path.write_text(front.format(extra=extra) + body, encoding="utf-8")
    return TemplateSet.load(root)


def test_the_shipped_html_parts_take_the_json_of_their_pieces() -> None:
    templates = shipped_templates()
    context = sample_context("en-US")
    for channel, name, locale in templates.names():
        compiled = templates._get(channel, name, locale)
        if compiled.html is not None:
            assert compiled.html.flat
            text, known = _run(compiled.html, context, SAMPLE_CREDITOR)
            assert known == json.dumps(text, ensure_ascii=False).encode()
