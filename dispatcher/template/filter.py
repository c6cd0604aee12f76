"""Locale-aware Jinja filters: ``money``, ``date`` and ``number`` (babel).

Each template is compiled in an environment bound to the template's own locale, so a
zh-CN template formats ``¥1,234.50`` and ``2025年3月5日`` even when an account's locale
fell back to it. The currency comes from the render context (``currency``) unless the
template passes one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import pass_context
from jinja2.runtime import Context

Number = Decimal | int | float

DATE_FORMATS = frozenset({"short", "medium", "long", "full"})


@lru_cache(maxsize=64)
def babel_locale(locale: str) -> Locale:
    """Parse a BCP 47 tag (``zh-CN``) into a babel Locale; ValueError if unknown.

    Cached: parsing is far slower than formatting, and there are few locales.
    """
    try:
        return Locale.parse(locale, sep="-")
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown locale {locale!r}") from exc


def canonical_locale(locale: str) -> str | None:
    """One spelling per locale (babel's, e.g. ``zh_Hans_CN`` for ``zh-CN``), or None.

    Why: ``zh-CN``, ``zh_CN`` and ``zh-Hans-CN`` name one locale; lookups by locale must
    not depend on which spelling an import stored.
    """
    try:
        return str(babel_locale(locale.replace("_", "-")))
    except ValueError:
        return None


def make_filters(locale: str) -> dict[str, Callable[..., Any]]:
    """The filters of one locale's environment.

    Why a factory: binding the locale at compile time keeps ``{{ balance|money }}``
    short in templates and avoids a context lookup per call.
    """
    loc = babel_locale(locale)

    # One account's SMS, email and letter format the same amount and date: formatting
    # through babel is the dearest step of a render, so each result is kept.
    @lru_cache(maxsize=4096)
    def formatted_money(value: Number, code: str) -> str:
        return str(format_currency(value, code, locale=loc))

    @lru_cache(maxsize=4096)
    def formatted_date(value: date, format: str) -> str:
        return str(format_date(value, format=format, locale=loc))

    @pass_context
    def money(context: Context, value: Number, currency: str | None = None) -> str:
        """``{{ balance|money }}``: the amount in the context's (or the given) currency."""
        code = currency if currency is not None else context.resolve_or_missing("currency")
        if not isinstance(code, str):
            raise ValueError("money needs a currency: pass one or set `currency`")
        return formatted_money(value, code)

    def date_(value: date | datetime, format: str = "medium") -> str:
        """``{{ due_date|date }}`` or ``|date("long")``: a localised calendar date."""
        if format not in DATE_FORMATS:
            raise ValueError(f"date format must be one of {sorted(DATE_FORMATS)}")
        if isinstance(value, datetime):
            value = value.date()
        return formatted_date(value, format)

    def number(value: Number) -> str:
        """``{{ dpd|number }}``: a localised number with grouping separators."""
        return str(format_decimal(value, locale=loc))

    return {"money": money, "date": date_, "number": number}
