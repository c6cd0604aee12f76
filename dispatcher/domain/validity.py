"""No late arrival: how long a provider may keep trying to deliver an SMS.

A provider queues what it cannot deliver at once (Twilio: up to ten hours, or the
``validity_period`` given with the message, 1..36000 seconds) and delivers it when the
handset comes back: a reminder handed over at 20:55 could reach the customer at 02:00.
Rule ``sms.validity.window``: every SMS is handed over with a validity that ends no later
than the end of the contact window it was sent in, in every candidate zone, so it
arrives inside the window or not at all. With less than a minimum left, it is not handed
over but deferred to the next window (a message squeezed into the last seconds would
mostly expire in the provider's queue).

Pure: the caller passes ``now`` and the window end (:func:`dispatcher.domain.window.window_end`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

RULE_ID = "sms.validity.window"
RULE_SOURCE = (
    "house rule HR-11: an SMS must arrive inside the contact window or not at all "
    "(FDCPA §805(a)(1), 15 U.S.C. §1692c(a)(1); Reg F 12 CFR 1006.6(b)(1)(i), read at the "
    "moment the message can reach the consumer); carried out with Twilio's validity_period"
)
# Twilio's bounds for validity_period (its default, and the longest it queues, is 36000 s);
# the Twilio channel clamps to them too.
PROVIDER_MAX = timedelta(seconds=36_000)
PROVIDER_MIN = timedelta(seconds=1)
# The reason code of a message deferred because too little of its window was left.
WINDOW_CLOSING = "window_closing"


@dataclass(frozen=True, slots=True)
class Validity:
    """Hand over now with ``valid_for`` (the provider drops it at ``until``), or not at all
    (``go`` False: too little of the window is left; wait for the next one)."""

    go: bool
    until: datetime | None = None
    valid_for: timedelta | None = None


def validity(
    now: datetime,
    window_end: datetime | None,
    *,
    minimum: timedelta,
    maximum: timedelta = PROVIDER_MAX,
) -> Validity:
    """How long a message handed over at ``now`` may be tried: until ``window_end``, at
    most ``maximum`` (the provider's own limit); ``go`` is False when less than
    ``minimum`` is left (rule ``sms.validity.window``).

    ``window_end`` None means no window ends within the look-ahead: the provider's
    maximum applies. The validity is whole seconds, rounded down, so ``now + valid_for``
    never passes ``window_end``.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    limit = maximum if window_end is None else min(maximum, window_end - now)
    seconds = int(limit.total_seconds())  # down: never a fraction past the end
    valid_for = timedelta(seconds=max(seconds, 0))
    if valid_for < max(minimum, PROVIDER_MIN):
        return Validity(go=False)
    return Validity(go=True, until=now + valid_for, valid_for=valid_for)
