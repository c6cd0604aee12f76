"""Holds: the reasons a due message must not go out now, each with a rule id and source.

This module answers one question for the planner and again for the sender (the account
may have changed in between): *may this account be contacted over this channel now, and
if not, why and until when?* Contact windows, holidays and caps arrive with the policy
packs; the holds below come from the account itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dispatcher.domain.account import Account, Flag
from dispatcher.domain.strategy import ChannelKind


class HoldReason(StrEnum):
    """Reason codes recorded on held messages and in the audit log (DESIGN.md)."""

    DECEASED = "deceased"
    BANKRUPTCY = "bankruptcy"
    CEASE_AND_DESIST = "cease_and_desist"
    DO_NOT_CONTACT = "do_not_contact"
    DISPUTE = "dispute"
    PROMISE_TO_PAY = "promise_to_pay"
    OPTED_OUT_SMS = "opted_out_sms"
    OPTED_OUT_EMAIL = "opted_out_email"
    FRAUD = "fraud"
    PAYMENT_PLAN = "payment_plan"
    NO_PHONE = "no_phone"
    NO_EMAIL = "no_email"
    NO_ADDRESS = "no_address"
    TEMPLATE_MISSING = "template_missing"
    TEMPLATE_NOT_APPROVED = "template_not_approved"
    RENDER_FAILED = "render_failed"
    NO_CONTACT_WINDOW = "no_contact_window"
    # Placed from a provider's answer (dispatcher.service.sender), never by a planner rule.
    INVALID_PHONE = "invalid_phone"
    INVALID_EMAIL = "invalid_email"


@dataclass(frozen=True, slots=True)
class Rule:
    """A compliance rule: its id, the statute or house rule it comes from, and its reason."""

    id: str
    source: str
    reason: HoldReason


# Order matters: the first rule that applies is the reason recorded, so the most
# serious and least likely to lift comes first.
RULES: tuple[Rule, ...] = (
    Rule(
        "hold.deceased",
        "Reg F 12 CFR 1006.2(e) (estate contacts only); house rule",
        HoldReason.DECEASED,
    ),
    Rule("hold.bankruptcy", "11 U.S.C. §362(a)(6) automatic stay", HoldReason.BANKRUPTCY),
    Rule(
        "hold.cease_and_desist", "FDCPA §805(c), 15 U.S.C. §1692c(c)", HoldReason.CEASE_AND_DESIST
    ),
    Rule("hold.do_not_contact", "house rule HR-1: do-not-contact flag", HoldReason.DO_NOT_CONTACT),
    Rule("hold.dispute", "FDCPA §809(b), 15 U.S.C. §1692g(b)", HoldReason.DISPUTE),
    Rule(
        "hold.fraud",
        "house rule HR-10: no collection while identity theft or fraud is investigated "
        "(FCRA §605B context)",
        HoldReason.FRAUD,
    ),
    Rule(
        "hold.promise_to_pay",
        "house rule HR-2: no reminders while a promise to pay runs",
        HoldReason.PROMISE_TO_PAY,
    ),
    Rule(
        "hold.payment_plan",
        "house rule HR-2: no reminders while an agreed payment plan is kept",
        HoldReason.PAYMENT_PLAN,
    ),
    Rule(
        "hold.opt_out_sms", "Reg F 12 CFR 1006.6(e); TCPA 47 CFR 64.1200", HoldReason.OPTED_OUT_SMS
    ),
    Rule(
        "hold.opt_out_email",
        "Reg F 12 CFR 1006.6(e); CAN-SPAM 15 U.S.C. §7704(a)(4)",
        HoldReason.OPTED_OUT_EMAIL,
    ),
    Rule(
        "hold.invalid_phone",
        "house rule HR-3: no SMS to a number the carrier network reports as invalid or not "
        "mobile (Twilio 21211/21614); TCPA 47 CFR 64.1200 (no texts to numbers we cannot "
        "know are the consumer's mobile)",
        HoldReason.INVALID_PHONE,
    ),
    Rule(
        "hold.invalid_email",
        "house rule HR-3: no email to a mailbox the receiving server refused as nonexistent "
        "(SMTP 550/551/553, RFC 5321 §4.2.2; enhanced status 5.1.x, RFC 3463)",
        HoldReason.INVALID_EMAIL,
    ),
    Rule("hold.no_phone", "house rule HR-3: no SMS without a valid phone", HoldReason.NO_PHONE),
    Rule("hold.no_email", "house rule HR-3: no email without an address", HoldReason.NO_EMAIL),
    Rule(
        "hold.no_address",
        "house rule HR-3: no letter without a postal address",
        HoldReason.NO_ADDRESS,
    ),
    Rule(
        "hold.no_contact_window",
        "Reg F 12 CFR 1006.6(b)(1)(i): when no time is convenient in every place the consumer "
        "may be, do not contact; a person must settle the time zone",
        HoldReason.NO_CONTACT_WINDOW,
    ),
    Rule(
        "hold.template_missing",
        "house rule HR-4: only what a template of the account's locale (or the default) says",
        HoldReason.TEMPLATE_MISSING,
    ),
    Rule(
        "hold.template_not_approved",
        "house rule HR-12: only a version a second person approved is sent (four eyes); "
        "a draft never is",
        HoldReason.TEMPLATE_NOT_APPROVED,
    ),
    Rule(
        "hold.render_failed",
        "house rule HR-4: a message that does not render is never sent in part",
        HoldReason.RENDER_FAILED,
    ),
)
RULE_BY_REASON: dict[HoldReason, Rule] = {rule.reason: rule for rule in RULES}

_FLAG_HOLDS: tuple[tuple[Flag, HoldReason], ...] = (
    (Flag.DECEASED, HoldReason.DECEASED),
    (Flag.BANKRUPTCY, HoldReason.BANKRUPTCY),
    (Flag.CEASE_AND_DESIST, HoldReason.CEASE_AND_DESIST),
    (Flag.DO_NOT_CONTACT, HoldReason.DO_NOT_CONTACT),
    (Flag.DISPUTE, HoldReason.DISPUTE),
)


@dataclass(frozen=True, slots=True)
class Hold:
    """A decision not to send now. ``until`` is when it lifts by itself, if it does."""

    reason: HoldReason
    rule_id: str
    until: datetime | None = None


def hold_for(account: Account, channel: ChannelKind, now: datetime) -> Hold | None:
    """Return the hold that stops contacting ``account`` over ``channel`` at ``now``, or None.

    Enforces the rules in :data:`RULES`, in order. A promise to pay lifts at the start of
    the day after the promised date, in the account's own time zone.
    """
    placed = _placed_hold(account, channel, now)
    for flag, reason in _FLAG_HOLDS:
        if account.has(flag):
            flagged = hold_because(reason)
            if placed is None or _rank(flagged.reason) <= _rank(placed.reason):
                return flagged
            return placed
    if placed is not None:
        return placed
    promise = account.promise_to_pay_until
    zone = ZoneInfo(account.timezone)
    if promise is not None and now.astimezone(zone).date() <= promise:
        return hold_because(
            HoldReason.PROMISE_TO_PAY, until=_start_of(promise + timedelta(days=1), zone)
        )
    if channel is ChannelKind.SMS:
        if account.has(Flag.OPT_OUT_SMS):
            return hold_because(HoldReason.OPTED_OUT_SMS)
        if not account.phone:
            return hold_because(HoldReason.NO_PHONE)
    elif channel is ChannelKind.EMAIL:
        if account.has(Flag.OPT_OUT_EMAIL):
            return hold_because(HoldReason.OPTED_OUT_EMAIL)
        if not account.email:
            return hold_because(HoldReason.NO_EMAIL)
    elif channel is ChannelKind.LETTER and account.address is None:
        return hold_because(HoldReason.NO_ADDRESS)
    return None


# Reasons a person or an import may place as a hold record (`dispatcher hold add`).
PLACEABLE: tuple[HoldReason, ...] = (
    HoldReason.DECEASED,
    HoldReason.BANKRUPTCY,
    HoldReason.CEASE_AND_DESIST,
    HoldReason.DO_NOT_CONTACT,
    HoldReason.DISPUTE,
    HoldReason.FRAUD,
    HoldReason.PROMISE_TO_PAY,
    HoldReason.PAYMENT_PLAN,
    HoldReason.OPTED_OUT_SMS,
    HoldReason.OPTED_OUT_EMAIL,
)
_SERIOUSNESS = {rule.reason.value: rank for rank, rule in enumerate(RULES)}


def _rank(reason: str) -> int:
    return _SERIOUSNESS.get(reason, len(RULES))


def _placed_hold(account: Account, channel: ChannelKind, now: datetime) -> Hold | None:
    """The most serious active hold record that covers ``channel`` at ``now``."""
    active = [
        h
        for h in account.holds
        if h.active(now) and (h.channel is None or h.channel == channel.value)
    ]
    if not active:
        return None
    worst = min(active, key=lambda h: _rank(h.reason))
    return hold_because(HoldReason(worst.reason), until=worst.ends_at)


def hold_because(reason: HoldReason, until: datetime | None = None) -> Hold:
    """The hold for ``reason`` with its rule id, lifting by itself at ``until`` if given."""
    return Hold(reason=reason, rule_id=RULE_BY_REASON[reason].id, until=until)


def _start_of(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=zone)
