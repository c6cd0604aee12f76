"""Time zones: which names are real, which zones keep the same clock, where a customer may be.

Reg F 12 CFR 1006.6(b)(1)(i) has a collector who does not know the consumer's location
treat every plausible location as the consumer's: :func:`candidate_zones` gives that set,
and the contact window must hold in each of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import us
import zipcodes
from babel.core import get_global

from dispatcher.domain.account import Account

# Two zones are the same clock if they agree at these instants (winter and summer).
_REFERENCE_INSTANTS: Final = tuple(
    datetime(year, month, 15, 12, tzinfo=UTC) for year in (2025, 2026) for month in (1, 7)
)
# Sources (see dispatcher.account_file) where the stored zone is one guess among several.
AMBIGUOUS_SOURCES: Final = frozenset({"country_ambiguous", "region_ambiguous"})


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


@functools.cache
def _zip_zones() -> dict[str, str]:
    """ZIP code → zone, built once from the package's list (a lookup per row would scan it)."""
    list_all: Callable[[], list[dict[str, Any]]] = zipcodes.list_all
    return {z["zip_code"]: z["timezone"] for z in list_all() if z.get("timezone")}


def postal_zone(country: str | None, postal_code: str | None) -> str | None:
    """The zone of a US ZIP code (the ``zipcodes`` package's data), else None."""
    if country != "US" or not postal_code:
        return None
    zone = _zip_zones().get(postal_code.strip()[:5])
    return zone if zone and zone_ok(zone) else None


@functools.cache
def region_zones(country: str | None, region: str | None) -> tuple[str, ...]:
    """The zones of a US state (the ``us`` package's data); () when unknown."""
    if country != "US" or not region:
        return ()
    state = us.states.lookup(region.strip())
    if state is None or not state.time_zones:
        return ()
    return tuple(z for z in state.time_zones if zone_ok(z))


def address_zone(
    country: str | None, region: str | None, postal_code: str | None
) -> tuple[str, str, tuple[str, ...]] | None:
    """Where the postal address puts the customer: (zone, source, all zones) or None.

    The ZIP code first (one zone), then the state: "region" when it has one clock,
    "region_ambiguous" when it spans several (Texas, Florida, ...).
    """
    zone = postal_zone(country, postal_code)
    if zone is not None:
        return zone, "postal", (zone,)
    zones = region_zones(country, region)
    if not zones:
        return None
    return zones[0], "region" if same_clock(zones) else "region_ambiguous", zones


def candidate_zones(account: Account) -> tuple[str, ...]:
    """Every zone the customer may be in: the resolved zone, or all of an ambiguous country's.

    A US account with neither a zone nor an area code that settles it may be anywhere from
    Hawaii to Maine; a message may go only when it is inside the window in all of them.
    """
    if account.timezone_source == "region_ambiguous":
        zones = region_zones(account.country, account.region)
        if zones:
            return distinct_clocks((account.timezone, *zones))
    if account.timezone_source in AMBIGUOUS_SOURCES and account.country:
        zones = country_zones(account.country)
        if zones:
            return distinct_clocks((account.timezone, *zones))
    return (account.timezone,)
