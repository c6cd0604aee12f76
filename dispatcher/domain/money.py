"""Money as exact minor units, with each currency's own number of decimals (ISO 4217)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from babel.numbers import get_currency_precision


@lru_cache(maxsize=512)
def minor_digits(currency: str) -> int:
    """Decimals of ``currency``: 2 for USD/CNY, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency))


def from_minor(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-minor_digits(currency))


def to_minor(amount: Decimal, currency: str) -> int:
    """Exact conversion; raises ValueError when ``amount`` has more decimals than allowed."""
    scaled = amount.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than {minor_digits(currency)} decimals for {currency}")
    return int(scaled)
