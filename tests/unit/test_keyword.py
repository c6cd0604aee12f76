"""Reading inbound SMS keywords (dispatcher/domain/keyword.py): rules sms.keyword.*."""

from __future__ import annotations

import pytest

from dispatcher.domain.keyword import Intent, read


@pytest.mark.parametrize(
    ("body", "intent", "keyword"),
    [
        # Every opt-out word (TCPA / FCC 24-24 list, Twilio and CTIA defaults) ...
        ("STOP", Intent.OPT_OUT, "STOP"),
        ("STOPALL", Intent.OPT_OUT, "STOPALL"),
        ("UNSUBSCRIBE", Intent.OPT_OUT, "UNSUBSCRIBE"),
        ("CANCEL", Intent.OPT_OUT, "CANCEL"),
        ("END", Intent.OPT_OUT, "END"),
        ("QUIT", Intent.OPT_OUT, "QUIT"),
        ("REVOKE", Intent.OPT_OUT, "REVOKE"),
        ("OPT OUT", Intent.OPT_OUT, "OPTOUT"),
        ("OPTOUT", Intent.OPT_OUT, "OPTOUT"),
        # ... in any case, with spaces and punctuation around it.
        ("stop", Intent.OPT_OUT, "STOP"),
        ("  Stop.  ", Intent.OPT_OUT, "STOP"),
        ("STOP!!!", Intent.OPT_OUT, "STOP"),
        ('"stop"', Intent.OPT_OUT, "STOP"),
        ("\tquit\n", Intent.OPT_OUT, "QUIT"),
        ("opt-out", Intent.OPT_OUT, "OPTOUT"),
        ("Opt  Out!", Intent.OPT_OUT, "OPTOUT"),
        ("Ｓｔｏｐ", Intent.OPT_OUT, "STOP"),  # full-width letters from a CJK keyboard
        ("STOP 🛑", Intent.OPT_OUT, "STOP"),
        ("S T O P", Intent.OPT_OUT, "STOP"),  # spaced out: read as meant (err to stopping)
        # Opting back in.
        ("START", Intent.OPT_IN, "START"),
        ("unstop", Intent.OPT_IN, "UNSTOP"),
        ("Yes.", Intent.OPT_IN, "YES"),
        # Help.
        ("HELP", Intent.HELP, "HELP"),
        ("info?", Intent.HELP, "INFO"),
        # Not keywords: no state change.
        ("", Intent.OTHER, None),
        ("I paid yesterday", Intent.OTHER, None),
        ("STOPPED", Intent.OTHER, None),
        ("startled", Intent.OTHER, None),
        ("help me pay", Intent.OTHER, None),
    ],
)
def test_keywords(body: str, intent: Intent, keyword: str | None) -> None:
    reading = read(body)
    assert (reading.intent, reading.keyword) == (intent, keyword)


@pytest.mark.parametrize(
    ("body", "review"),
    [
        ("please stop texting me", True),
        ("I want to opt out of these", True),
        ("Unsubscribe me now", True),
        ("I will pay at the end of the month", True),  # a person judges, nothing automatic
        ("I paid yesterday", False),
        ("STOP", False),  # a keyword is acted on, not reviewed
    ],
)
def test_an_opt_out_word_inside_a_longer_message_is_flagged_for_review(
    body: str, review: bool
) -> None:
    reading = read(body)
    assert reading.needs_review is review
    if review:
        assert reading.intent is Intent.OTHER
