"""What an inbound SMS asks for: opt out, opt back in, help, or nothing we act on.

Pure. The keyword is the whole message, in any case, with surrounding spaces and
punctuation ignored ("Stop!", " stop. ", "opt-out"), the way carriers and Twilio's own
opt-out handling read it. A message that merely *contains* an opt-out word ("please stop
texting me") is not acted on automatically but flagged for a person to review: the FCC
judges such replies by the totality of the circumstances (FCC 24-24, 47 CFR 64.1200).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


class Intent(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    OTHER = "other"


RULE_OPT_OUT = "sms.keyword.opt_out"
SOURCE_OPT_OUT = (
    "TCPA revocation of consent, FCC 24-24 (89 FR 15756), 47 CFR 64.1200(a)(10): stop, quit, "
    "end, revoke, opt out, cancel, unsubscribe are per se revocations; Reg F 12 CFR "
    "1006.6(e); CTIA Messaging Principles and Best Practices (STOPALL, UNSUBSCRIBE)"
)
RULE_OPT_IN = "sms.keyword.opt_in"
SOURCE_OPT_IN = (
    "CTIA Messaging Principles and Best Practices: START, UNSTOP, YES re-subscribe a number "
    "that opted out by keyword (Twilio Advanced Opt-Out defaults)"
)

# Words compared after folding case and dropping spaces, hyphens and underscores, so
# "OPT OUT", "opt-out" and "OptOut" are one keyword.
OPT_OUT_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"}
)
OPT_IN_WORDS = frozenset({"start", "unstop", "yes"})
HELP_WORDS = frozenset({"help", "info"})

# Spaces, punctuation and symbols (emoji included) around the keyword.
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_JOINERS = re.compile(r"[\s\-_]+")
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True, slots=True)
class Reading:
    """What the message asks for, the keyword as read, and whether a person should look
    (an opt-out word inside a longer message)."""

    intent: Intent
    keyword: str | None = None
    needs_review: bool = False


def read(body: str) -> Reading:
    """Classify an inbound SMS ``body`` (rule ``sms.keyword.opt_out`` / ``.opt_in``)."""
    text = _EDGE.sub("", unicodedata.normalize("NFKC", body)).casefold()
    folded = _JOINERS.sub("", text)
    if folded in OPT_OUT_WORDS:
        return Reading(Intent.OPT_OUT, folded.upper())
    if folded in OPT_IN_WORDS:
        return Reading(Intent.OPT_IN, folded.upper())
    if folded in HELP_WORDS:
        return Reading(Intent.HELP, folded.upper())
    words = _WORD.findall(text)
    pairs = {a + b for a, b in itertools.pairwise(words)}
    if OPT_OUT_WORDS & (set(words) | pairs):
        return Reading(Intent.OTHER, needs_review=True)
    return Reading(Intent.OTHER)
