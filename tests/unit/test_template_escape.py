"""Escaping rules: what each channel does to an interpolated value."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from dispatcher.template.escape import (
    TypstCode,
    html_value,
    normalise_text,
    single_line,
    strip_unsafe,
    text_value,
    typst_escape,
    typst_string,
    typst_value,
)

_TOKEN = re.compile(r"\\u\{([0-9a-f]+)\}|([^\\])")


def unescape(escaped: str) -> str:
    """Decode typst_escape output the way Typst does."""
    out = []
    position = 0
    for match in _TOKEN.finditer(escaped):
        assert match.start() == position, escaped
        position = match.end()
        out.append(chr(int(match[1], 16)) if match[1] else match[2])
    assert position == len(escaped)
    return "".join(out)


@given(st.text())
def test_typst_escape_leaves_only_letters_digits_spaces_and_unicode_escapes(text: str) -> None:
    escaped = typst_escape(text)
    assert re.fullmatch(r"(?:[^\W_]| |\\u\{[0-9a-f]+\})*", escaped)
    assert unescape(escaped) == strip_unsafe(text)


def test_typst_escape_examples() -> None:
    assert typst_escape("Jane Doe") == "Jane Doe"
    assert typst_escape('#read("/x")') == "\\u{23}read\\u{28}\\u{22}\\u{2f}x\\u{22}\\u{29}"
    assert typst_escape("欧阳明华") == "欧阳明华"
    assert typst_escape("a_b") == "a\\u{5f}b"
    assert typst_escape("😀") == "\\u{1f600}"


def test_typst_value_and_typst_string() -> None:
    assert typst_value(42) == "42"
    assert typst_value("$5") == "\\u{24}5"
    literal = typst_string('say "hi"')
    assert isinstance(literal, TypstCode)
    assert literal == '"say \\u{22}hi\\u{22}"'
    assert typst_value(literal) == literal  # not escaped twice


def test_text_and_html_values_drop_controls_and_bidi_overrides() -> None:
    assert text_value("a\x00b\u202ec\nd\te") == "abc\nd\te"
    assert text_value(7) == "7"
    assert html_value("<b>\u2066") == "<b>"  # autoescape escapes it afterwards
    safe = Markup("<b>ok</b>")
    assert html_value(safe) is safe


def test_normalise_text_and_single_line() -> None:
    assert normalise_text("\n \n  a  \n\n b \n\n") == "  a\n\n b"
    assert normalise_text("") == ""
    assert single_line(" a\r\n b\t c ") == "a b c"
