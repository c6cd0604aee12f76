"""Inbound SMS: a customer's reply to one of our numbers (Twilio inbound webhook).

- STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPT OUT, OPTOUT (rule
  ``sms.keyword.opt_out``): an SMS opt-out hold at once on every account with that phone
  number (reason ``opted_out_sms``, channel sms, scope person, source ``inbound_sms``, the
  keyword in the note). Queued SMS of those accounts are then held by the sender, which
  checks holds again at the moment of sending.
- START, UNSTOP, YES (rule ``sms.keyword.opt_in``): lift the holds an inbound STOP placed.
  Opt-outs from an import flag or placed by hand stay: they came from elsewhere.
- HELP, INFO: the reply text of the account's policy pack (``[help]``).
- Anything else: recorded, nothing changes; one that contains an opt-out word is flagged
  ``needs_review`` for a person to judge.

Every inbound message is an audit record (``inbound_sms_received``) on each account of
the number, or on none when the number is nobody's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from dispatcher.account_file import phone_e164
from dispatcher.domain.keyword import RULE_OPT_IN, RULE_OPT_OUT, Intent, Reading, read
from dispatcher.domain.policy import HoldReason
from dispatcher.domain.strategy import ChannelKind
from dispatcher.policy_book import PolicyBook
from dispatcher.store.sql import AuditEntry, SqlStore

ACTOR = "webhook:twilio"
SOURCE = "inbound_sms"
# What is kept of a message body as evidence (Twilio's longest concatenated SMS).
BODY_KEPT = 1600


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    """What an inbound SMS did: how it was read, the accounts of the number, the holds
    placed or lifted, and the reply to send back (None: no reply)."""

    reading: Reading
    accounts: list[str] = field(default_factory=list)
    placed: list[tuple[str, int]] = field(default_factory=list)
    lifted: list[tuple[str, int]] = field(default_factory=list)
    reply: str | None = None


def receive(
    store: SqlStore,
    book: PolicyBook,
    sender: str,
    body: str,
    now: datetime,
    *,
    region: str,
    help_values: Mapping[str, str],
    provider_message_id: str | None = None,
) -> InboundOutcome:
    """Act on one inbound SMS from ``sender`` (see module doc); audited in one go with
    the holds it places or lifts."""
    reading = read(body)
    phone = phone_e164(sender, region)
    accounts = store.accounts_with_phone(phone) if phone else []
    detail: dict[str, object] = {
        "from": phone or sender,
        "intent": reading.intent.value,
        "keyword": reading.keyword,
        "body": body[:BODY_KEPT],
        "provider_message_id": provider_message_id,
    }
    if reading.intent is Intent.OPT_OUT:
        detail["rule_id"] = RULE_OPT_OUT
    elif reading.intent is Intent.OPT_IN:
        detail["rule_id"] = RULE_OPT_IN
    if reading.needs_review:
        detail["needs_review"] = True
    reply = None
    if reading.intent is Intent.HELP:
        account = store.account(accounts[0]) if accounts else None
        found = book.help_for(account.jurisdiction if account else "default")
        if found is not None:
            reply = found.render(dict(help_values))
            detail["rule_id"] = found.id
    targets: list[str | None] = [*accounts] or [None]
    received = [
        AuditEntry("inbound_sms_received", ACTOR, now, account_id, detail=detail)
        for account_id in targets
    ]
    if reading.intent is Intent.OPT_OUT and phone:
        placed = store.hold_phone(
            phone,
            HoldReason.OPTED_OUT_SMS.value,
            channel=ChannelKind.SMS.value,
            scope="person",
            note=f"replied {reading.keyword} by SMS ({RULE_OPT_OUT})",
            source=SOURCE,
            actor=ACTOR,
            now=now,
            audit=received,
        )
        return InboundOutcome(reading, accounts, placed=placed)
    if reading.intent is Intent.OPT_IN and phone:
        lifted = store.lift_phone_holds(
            phone,
            HoldReason.OPTED_OUT_SMS.value,
            source=SOURCE,
            note=f"replied {reading.keyword} by SMS ({RULE_OPT_IN})",
            actor=ACTOR,
            now=now,
            audit=received,
        )
        return InboundOutcome(reading, accounts, lifted=lifted)
    store.audit(received)
    return InboundOutcome(reading, accounts, reply=reply)
