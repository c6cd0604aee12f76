"""Time zones: which names are real, which zones keep the same clock, where a customer may be.

Reg F 12 CFR 1006.6(b)(1)(i) has a collector who does not know the consumer's location
treat every plausible location as the consumer's: :func:`candidate_zones` gives that set,
and the contact window must hold in each of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.core import get_global

from dispatcher.domain.account import Account

# Two zones are the same clock if they agree at these instants (winter and summer).
_REFERENCE_INSTANTS: Final = tuple(
    datetime(year, month, 15, 12, tzinfo=UTC) for year in (2025, 2026) for month in (1, 7)
)
# Sources (see dispatcher.account_file) where the stored zone is one guess among several.
AMBIGUOUS_SOURCES: Final = frozenset({"country_ambiguous"})


def zone_ok(name: str) -> bool:
    """True when ``name`` is an IANA zone this machine's tz database knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@functools.cache
def zone_clock(name: str) -> tuple[timedelta | None, ...]:
    """The zone's UTC offsets at reference instants: equal tuples mean the same clock."""
    zone = ZoneInfo(name)
    return tuple(at.astimezone(zone).utcoffset() for at in _REFERENCE_INSTANTS)


def same_clock(zones: Sequence[str]) -> bool:
    return len({zone_clock(z) for z in zones}) == 1


def distinct_clocks(zones: Iterable[str]) -> tuple[str, ...]:
    """One zone per distinct clock, in first-seen order: checking one of each suffices."""
    seen: dict[tuple[timedelta | None, ...], str] = {}
    for zone in zones:
        seen.setdefault(zone_clock(zone), zone)
    return tuple(seen.values())


@functools.cache
def country_zones(country: str) -> tuple[str, ...]:
    """Every known zone of an ISO 3166 country (CLDR's territory zones)."""
    return tuple(z for z in get_global("territory_zones").get(country, ()) if zone_ok(z))


def candidate_zones(account: Account) -> tuple[str, ...]:
    """Every zone the customer may be in: the resolved zone, or all of an ambiguous country's.

    A US account with neither a zone nor an area code that settles it may be anywhere from
    Hawaii to Maine; a message may go only when it is inside the window in all of them.
    """
    if account.timezone_source in AMBIGUOUS_SOURCES and account.country:
        zones = country_zones(account.country)
        if zones:
            return distinct_clocks((account.timezone, *zones))
    return (account.timezone,)
