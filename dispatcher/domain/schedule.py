"""When a message may go: contact windows, holidays and frequency caps together.

Pure. The earliest instant at or after ``now`` that every rule of the account's pack chain
allows: inside the window in every candidate zone, not a holiday, and within every cap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from dispatcher.domain.cap import Contact, blocking_cap, next_within_caps
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import HolidayLookup, Pack, Place, Verdict, check

# Windows and caps push each other forward; this many rounds without agreement means
# a configuration no message can satisfy, reported as "no instant" rather than looped on.
_ROUNDS = 64

# check()'s signature: a caller may pass a memoised one (the rules are pure; see
# dispatcher/service/timing.py), so a plan asks once per place and instant, not per message.
WindowCheck = Callable[[datetime, Place, ChannelKind, Sequence[Pack], HolidayLookup], Verdict]


def schedule(
    now: datetime,
    place: Place,
    channel: ChannelKind,
    account_id: str,
    chain: Sequence[Pack],
    is_holiday: HolidayLookup,
    contacts: Sequence[Contact],
    *,
    check_window: WindowCheck = check,
) -> Verdict:
    """Allowed now, or the first rule that blocks it and the first instant nothing does.

    ``contacts`` are the person's messages that count for caps (sent, and queued to go),
    on every account of the person; the caller leaves out the message being decided.
    """
    caps = [cap for pack in chain for cap in pack.caps]
    at = now
    first: tuple[str, str] | None = None
    for _ in range(_ROUNDS):
        timing = check_window(at, place, channel, chain, is_holiday)
        if not timing.allowed:
            first = first or (str(timing.reason), str(timing.rule_id))
            if timing.next_allowed is None:
                return Verdict(False, first[0], first[1], None)
            at = timing.next_allowed  # every window and holiday rule allows this instant
        cap = blocking_cap(at, channel, account_id, contacts, caps)
        if cap is None:
            break
        first = first or (cap.reason, cap.id)
        at = next_within_caps(at, channel, account_id, contacts, caps)
    else:
        assert first is not None
        return Verdict(False, first[0], first[1], None)
    if first is None:
        return Verdict(allowed=True)
    return Verdict(False, first[0], first[1], at)
