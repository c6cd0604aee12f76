"""What a collector typed into the account search, as terms the index can answer.

Pure: text in, terms out. Substring search is served by trigram indexes (SQLite FTS5
``trigram``, PostgreSQL ``pg_trgm``), which need at least three characters: shorter words
are dropped (an exact account id of any length is still looked up). Phone numbers are
stored in E.164; the digits of what was typed are matched inside them however they were
written (``(617) 555-0142``, ``617.555.0142``, ``+1 617 555 0142``), and a national number
with its trunk prefix (UK ``07700 900123``) is also tried as its E.164 digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

MIN_TERM = 3  # a trigram index cannot narrow anything shorter
MAX_WORDS = 6
MAX_LENGTH = 200
_PHONE_LIKE = re.compile(r"^[\d\s()+\-./]+$")


@dataclass(frozen=True, slots=True)
class SearchTerms:
    text: str  # the whole query, trimmed: tried as an exact account id
    words: tuple[str, ...]  # each must occur in the id, name or email (substring, any case)
    phone_digits: tuple[str, ...]  # any of these occurring in the phone is a match

    @property
    def empty(self) -> bool:
        return not self.text

    @property
    def searchable(self) -> bool:
        """Whether there is anything for the substring index (else only the exact id)."""
        return bool(self.words or self.phone_digits)


def search_terms(query: str, region: str = "US") -> SearchTerms:
    """Split a query into words and phone digits (see the module doc)."""
    text = " ".join(query.split())[:MAX_LENGTH]
    words = tuple(w for w in text.split(" ") if len(w) >= MIN_TERM)[:MAX_WORDS]
    digits: list[str] = []
    if text and _PHONE_LIKE.match(text):
        plain = re.sub(r"\D", "", text)
        if len(plain) >= MIN_TERM:
            digits.append(plain)
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and phonenumbers.is_possible_number(number):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
            # Only when it finds more than the digits as typed do (a trunk 0 dropped):
            # "6175550142" already matches wherever "16175550142" would.
            if plain not in e164:
                digits.append(e164)
        # Digits typed as a number are not also words (a name has no digits to match).
        words = tuple(w for w in words if not _PHONE_LIKE.match(w))
    return SearchTerms(text, words, tuple(digits))


def like_pattern(term: str) -> str:
    """``%term%`` with LIKE's wildcards in ``term`` escaped (backslash is the escape):
    a ``%`` or ``_`` typed by a person is a character to find, not a wildcard."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_phrase(term: str) -> str:
    """An FTS5 string literal: double quotes doubled, so nothing typed is query syntax."""
    return '"' + term.replace('"', '""') + '"'
