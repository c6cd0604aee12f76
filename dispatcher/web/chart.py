"""Sends per hour as an inline SVG bar chart, drawn on the server (no chart library, no JS).

One bar per hour, stacked by channel, a day line and label at each local midnight, the
scale's top on the left; every bar carries a ``<title>`` (the browser's tooltip) with
the hour in the viewer's zone and its counts. Text goes through markupsafe's escape.
"""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from dispatcher.service.ops import HourSends

COLOURS = {"sms": "#2b6cb0", "email": "#2f855a", "letter": "#b7791f"}
WIDTH, HEIGHT = 840, 180
LEFT, BOTTOM, TOP = 36, 20, 10


def sends_chart(hours: Sequence[HourSends], zone: ZoneInfo) -> Markup:
    """The chart of ``hours`` (oldest first), times labelled in ``zone``."""
    total = sum(h.total for h in hours)
    peak = max((h.total for h in hours), default=0)
    scale = max(peak, 1)
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    bar = plot_w / max(len(hours), 1)
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(f"messages sent per hour: {total} in all")}" '
        'data-testid="sends-chart">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}" stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10">0</text>',
    ]
    for i, hour in enumerate(hours):
        local = hour.hour.astimezone(zone)
        x = LEFT + i * bar
        if local.hour == 0:
            parts.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" '
                'stroke="#ddd"/>'
                f'<text x="{x + 2:.1f}" y="{HEIGHT - 6}" font-size="10">'
                f"{escape(local.strftime('%a %d %b'))}</text>"
            )
        if not hour.total:
            continue
        counts = ", ".join(f"{n} {channel}" for channel, n in hour.by_channel.items() if n)
        label = f"{local:%Y-%m-%d %H:00 %Z}: {counts}"
        parts.append(
            f'<g class="bar" data-hour="{hour.hour.isoformat()}" data-total="{hour.total}">'
        )
        parts.append(f"<title>{escape(label)}</title>")
        y: float = TOP + plot_h
        for channel, n in hour.by_channel.items():
            if not n:
                continue
            h = plot_h * n / scale
            y -= h
            colour = COLOURS.get(channel, "#718096")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 0.5, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    # Safe: every text in it went through escape(); the rest are numbers we formatted.
    return Markup("".join(parts))  # noqa: S704
