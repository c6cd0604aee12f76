"""The sends-per-hour chart: well-formed SVG, bars in proportion, labels in the viewer's zone."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from dispatcher.service.ops import HourSends
from dispatcher.web.chart import BOTTOM, HEIGHT, TOP, sends_chart

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 6, 3, 16, tzinfo=UTC)


def hours(counts: dict[int, dict[str, int]]) -> list[HourSends]:
    return [
        HourSends(
            START + timedelta(hours=i), {"sms": 0, "email": 0, "letter": 0, **counts.get(i, {})}
        )
        for i in range(168)
    ]


def test_bars_are_stacked_in_proportion_and_titled_in_local_time() -> None:
    svg = ET.fromstring(
        str(
            sends_chart(
                hours({5: {"sms": 4, "email": 2}, 9: {"sms": 3}}), ZoneInfo("America/New_York")
            )
        )
    )
    bars = svg.findall(f"{SVG}g")
    assert [b.get("data-total") for b in bars] == ["6", "3"]
    tallest = sum(float(r.get("height", 0)) for r in bars[0].findall(f"{SVG}rect"))
    assert abs(tallest - (HEIGHT - BOTTOM - TOP)) < 0.2  # the peak fills the plot
    second = sum(float(r.get("height", 0)) for r in bars[1].findall(f"{SVG}rect"))
    assert abs(second / tallest - 0.5) < 0.01
    title = bars[0].find(f"{SVG}title")
    assert title is not None and title.text == "2026-06-03 17:00 EDT: 4 sms, 2 email"
    # A label at each local midnight: seven days of hours cross seven of them.
    days = [t.text for t in svg.findall(f"{SVG}text") if t.text and t.text[:3].isalpha()]
    assert len(days) == 7 and days[0] == "Thu 04 Jun"


def test_an_empty_week_draws_an_empty_chart() -> None:
    svg = ET.fromstring(str(sends_chart(hours({}), ZoneInfo("UTC"))))
    assert svg.findall(f"{SVG}g") == []
    assert svg.get("aria-label") == "messages sent per hour: 0 in all"
