"""Where a customer may be (dispatcher/zone.py): the candidate zones a window must hold in."""

from __future__ import annotations

import pytest

from dispatcher.zone import address_zone, candidate_zones, distinct_clocks
from tests.factory import account


@pytest.mark.parametrize(
    ("changes", "zones"),
    [
        ({"timezone": "America/Chicago", "timezone_source": "explicit"}, {"America/Chicago"}),
        (
            {"timezone": "America/Chicago", "timezone_source": "region_ambiguous", "region": "TX"},
            {"America/Chicago", "America/Denver"},
        ),
        (
            {"timezone": "America/New_York", "timezone_source": "region_ambiguous", "region": "FL"},
            {"America/New_York", "America/Chicago"},
        ),
    ],
)
def test_candidate_zones(changes: dict[str, str], zones: set[str]) -> None:
    assert set(candidate_zones(account(**changes))) == zones


def test_a_us_customer_who_may_be_anywhere_spans_hawaii_to_maine() -> None:
    found = candidate_zones(
        account(timezone="America/New_York", region=None, timezone_source="country_ambiguous")
    )
    assert "America/New_York" in found and "Pacific/Honolulu" in found
    assert len(found) == len(distinct_clocks(found))  # one zone per clock is enough


@pytest.mark.parametrize(
    ("country", "region", "postal", "expected"),
    [
        ("US", "MA", "02110", ("America/New_York", "postal")),
        ("US", "TX", "79901", ("America/Denver", "postal")),  # El Paso keeps Mountain time
        ("US", "MA", "", ("America/New_York", "region")),
        ("US", "Texas", "", ("America/Chicago", "region_ambiguous")),
        ("US", "", "", None),
        ("GB", "ENG", "SW1A 1AA", None),
    ],
)
def test_address_zone(
    country: str, region: str, postal: str, expected: tuple[str, str] | None
) -> None:
    found = address_zone(country, region, postal)
    assert (found[:2] if found else None) == expected
