"""Escaping of interpolated values, one rule per output format.

Templates are trusted text owned by compliance; the values interpolated into them
(customer names, addresses, amounts) are not. Each channel's Jinja environment runs
every ``{{ value }}`` through one of the ``finalize`` functions below, so a customer
named ``#read("/etc/passwd")`` or ``<script>`` is printed, never executed or parsed.

- Plain text (SMS, the email text part, the email subject): control characters and
  Unicode bidi overrides are removed; nothing else is special in plain text.
- HTML (the email HTML part): Jinja's autoescape; :func:`html_value` only removes
  control characters and bidi overrides before markupsafe escapes the rest.
- Typst (letters): :func:`typst_escape` keeps letters, digits and the ASCII space and
  writes every other character as a Typst Unicode escape ``\\u{hex}``. That spelling
  means the same character both in Typst markup and inside a Typst string literal, so
  a value is inert in either place; see docs/TEMPLATES.md.
"""

from __future__ import annotations

import re
from typing import Final

from markupsafe import Markup

# C0 and C1 control characters except TAB and LF, and the Unicode bidi embedding,
# override and isolate controls, which can visually reorder the text around a value
# ("Trojan Source"). Legitimate right-to-left names need none of them.
_UNSAFE: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
# Everything but Unicode letters and digits (``\w`` minus ``_``) and the ASCII space.
_TYPST_SPECIAL: Final = re.compile(r"[^\w ]|_")


class TypstCode(str):
    """A string that is already valid Typst and must not be escaped again.

    Only :func:`typst_string` makes these, from escaped values, so template data can
    never produce one.
    """

    __slots__ = ()


def strip_unsafe(text: str) -> str:
    """Remove control characters and bidi overrides from ``text``.

    Why: they are never part of a legitimate name or address, and they can hide or
    reorder the text of the template around the value.
    """
    if text.isprintable():
        # The common case, without a regex pass: every character removed below is a
        # control (Cc) or format (Cf) character, and str.isprintable is False for both.
        return text
    return _UNSAFE.sub("", text)


def text_value(value: object) -> str:
    """``finalize`` for plain-text templates: the value as text, minus unsafe characters."""
    return strip_unsafe(value if isinstance(value, str) else str(value))


def html_value(value: object) -> object:
    """``finalize`` for HTML templates; autoescape then escapes what this returns.

    ``Markup`` (already safe HTML, e.g. from ``|safe`` in a trusted template) passes
    through untouched so it is not escaped twice.
    """
    if isinstance(value, Markup):
        return value
    return strip_unsafe(value if isinstance(value, str) else str(value))


def _typst_char(match: re.Match[str]) -> str:
    return f"\\u{{{ord(match.group()):x}}}"


# The same escapes for every ASCII character the pattern matches, for str.translate: one
# C call per value instead of a Python callback per character (amounts, addresses, e-mail
# addresses and links are mostly ASCII punctuation).
_TYPST_ASCII: Final = {
    code: f"\\u{{{code:x}}}" for code in range(128) if _TYPST_SPECIAL.fullmatch(chr(code))
}


def typst_escape(text: str) -> str:
    """Escape ``text`` so Typst prints it literally, in markup or in a string literal.

    Why this spelling: a Typst string literal ``#"..."`` is only safe in markup; inside
    a template's own string (``#set document(title: "...")``) its quotes would end the
    author's string and expose the value as code. ``\\u{..}`` escapes mean the same
    character in both places, and outside them (in code) they are a syntax error, never
    an expression.
    """
    if text.replace(" ", "").isalnum():
        # Letters and digits only (most names, cities, amounts' digits): nothing to
        # escape. str.isalnum is the same class as the pattern's \w without "_".
        return text
    text = strip_unsafe(text)
    if text.isascii():
        return text.translate(_TYPST_ASCII)
    return _TYPST_SPECIAL.sub(_typst_char, text)


def typst_value(value: object) -> str:
    """``finalize`` for Typst templates: every interpolated value is escaped."""
    if isinstance(value, TypstCode):
        return value
    return typst_escape(value if isinstance(value, str) else str(value))


def typst_string(value: object) -> TypstCode:
    """Filter ``typst_string``: the value as a Typst string literal for code positions.

    Why: ``{{ x }}`` is meant for markup and strings; where Typst expects an expression
    (``#let amount = {{ balance|money|typst_string }}``) the template needs a quoted,
    escaped literal instead.
    """
    return TypstCode(f'"{typst_escape(value if isinstance(value, str) else str(value))}"')


def normalise_text(text: str) -> str:
    """Plain-text normal form: no trailing spaces, no leading or trailing blank lines.

    Why: template layout (Jinja tags on their own lines, indentation) must not leak
    into an SMS, where every character counts towards the segment limit.
    """
    # Blank lines at either end are the newlines at either end once lines are stripped.
    return "\n".join(map(str.rstrip, text.split("\n"))).strip("\n")


def single_line(text: str) -> str:
    """Collapse all whitespace, newlines included, to single spaces.

    Why: an email subject is a header; a newline in it would let data inject headers.
    """
    # What re.sub(r"\s+", " ", text).strip() gives (\s is str.isspace, as for split()),
    # in a fifth of the time.
    return " ".join(text.split())
