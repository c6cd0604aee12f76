"""Placing a hold by hand (the ``hold add`` command and the collector's account page).

The checks a hold placed by a person must pass, in one place: a reason people may place
(``PLACEABLE``), a channel that exists (the opt-out reasons bring their own), an evidence
note, and an end date for a promise to pay (rule ``hold.promise_to_pay``, HR-2).
"""

from __future__ import annotations

from datetime import datetime

from dispatcher.domain.policy import PLACEABLE, HoldReason
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError
from dispatcher.store.sql import SqlStore

CHANNEL_OF_REASON = {"opted_out_sms": "sms", "opted_out_email": "email"}


def place_hold(
    store: SqlStore,
    account_id: str,
    reason: str,
    *,
    note: str,
    channel: str | None,
    ends_at: datetime | None,
    person: bool,
    actor: str,
    now: datetime,
) -> int:
    """Check and place a hold; returns its id. Audited by the store (``hold_added``)."""
    choices = {r.value for r in PLACEABLE}
    if reason not in choices:
        raise InputError(f"--reason {reason!r}: choose one of {', '.join(sorted(choices))}")
    if channel is not None and channel not in {c.value for c in ChannelKind}:
        raise InputError(f"--channel {channel!r}: choose sms, email or letter")
    channel = CHANNEL_OF_REASON.get(reason, channel)
    if not note.strip():
        raise InputError("--note must say why (the evidence), it is kept with the hold")
    if reason == HoldReason.PROMISE_TO_PAY and ends_at is None:
        raise InputError("a promise to pay needs --until (the promised date)")
    if store.account(account_id) is None:
        raise InputError(f"no account {account_id!r}")
    return store.add_hold(
        account_id,
        reason,
        channel=channel,
        scope="person" if person else "account",
        starts_at=now,
        ends_at=ends_at,
        note=note,
        actor=actor,
        now=now,
    )
