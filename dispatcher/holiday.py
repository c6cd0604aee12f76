"""Public-holiday lookups over the ``holidays`` package, cached per calendar and year."""

from __future__ import annotations

import functools
from datetime import date

import holidays


@functools.cache
def _subdivisions(calendar: str) -> frozenset[str]:
    return frozenset(holidays.country_holidays(calendar).subdivisions)


@functools.cache
def _calendar(calendar: str, subdivision: str | None, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(calendar, subdiv=subdivision, years=year)


def is_holiday(calendar: str, region: str | None, day: date) -> bool:
    """True when ``day`` is a public holiday of ``calendar`` (ISO country), in ``region``
    if that is one of the country's subdivisions (a US state, a UK nation), else nationwide."""
    subdivision = region.upper() if region and region.upper() in _subdivisions(calendar) else None
    return day in _calendar(calendar, subdivision, day.year)
