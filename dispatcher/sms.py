"""SMS encoding and exact segment counting (3GPP TS 23.038 / GSM 03.38).

An SMS is sent in GSM-7 when every character is in the GSM 03.38 default alphabet or its
extension table, otherwise in UCS-2. What a message costs depends on both:

- GSM-7: a default-alphabet character is one septet; an extension character
  (``^ { } \\ [ ~ ] | €`` and form feed) is two (an ESC septet, then the character).
- UCS-2: each UTF-16 code unit is one unit, so a character outside the Basic
  Multilingual Plane (most emoji) costs two (a surrogate pair).

A message of at most 160 septets (70 UCS-2 units) is one segment. A longer one is sent
as concatenated segments of at most 153 septets (67 units) each, the rest of each
segment being the concatenation header. A segment never ends between an ESC septet and
its character, nor between the two halves of a surrogate pair, so a segment can hold one
unit less than its maximum. Why exact: every segment is billed, and the per-pack limit
(``max_sms_segments`` in a policy pack, default :data:`DEFAULT_MAX_SMS_SEGMENTS`) is a
lint error when exceeded, never a silent cut.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 default alphabet (one septet each), without the ESC code itself."""

GSM7_EXTENSION: Final = frozenset("^{}\\[~]|€\f")
"""Characters of the GSM 03.38 extension table: two septets each (ESC + character)."""

DEFAULT_MAX_SMS_SEGMENTS: Final = 3
"""The segment limit when no policy pack sets ``max_sms_segments``."""

SINGLE_LIMIT: Final = {"GSM-7": 160, "UCS-2": 70}
"""Units one unconcatenated SMS carries, per encoding."""

CONCAT_LIMIT: Final = {"GSM-7": 153, "UCS-2": 67}
"""Units each segment of a concatenated SMS carries, per encoding."""


class SmsEncoding(StrEnum):
    """How the message is encoded on the air interface."""

    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """What one SMS text costs: encoding, length in units, segments.

    ``units`` are septets for GSM-7 and UTF-16 code units for UCS-2. ``non_gsm`` lists,
    in order of first appearance, the characters that forced UCS-2 (empty for GSM-7),
    so a lint message can say "the curly quote ’ forces UCS-2".
    """

    encoding: SmsEncoding
    units: int
    segments: int
    non_gsm: tuple[str, ...]

    @property
    def per_segment(self) -> int:
        """Units per segment at this length: the single limit, or the concatenated one."""
        limits = SINGLE_LIMIT if self.segments <= 1 else CONCAT_LIMIT
        return limits[self.encoding.value]


def is_gsm7(char: str) -> bool:
    """Whether one character can be sent in GSM-7 (default alphabet or extension)."""
    return char in GSM7_BASIC or char in GSM7_EXTENSION


def non_gsm_chars(text: str) -> tuple[str, ...]:
    """The distinct characters of ``text`` that GSM-7 cannot carry, in order of appearance."""
    return tuple(dict.fromkeys(c for c in text if not is_gsm7(c)))


def encoding_of(text: str) -> SmsEncoding:
    """GSM-7 when every character of ``text`` fits it, else UCS-2."""
    return SmsEncoding.GSM7 if all(is_gsm7(c) for c in text) else SmsEncoding.UCS2


def char_units(char: str, encoding: SmsEncoding) -> int:
    """What one character costs: 1 or 2 septets (GSM-7), 1 or 2 code units (UCS-2)."""
    if encoding is SmsEncoding.GSM7:
        return 2 if char in GSM7_EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def _costs(text: str, encoding: SmsEncoding) -> Iterator[int]:
    return (char_units(c, encoding) for c in text)


def count_units(text: str, encoding: SmsEncoding | None = None) -> int:
    """Length of ``text`` in units of ``encoding`` (by default the one it needs)."""
    return sum(_costs(text, encoding or encoding_of(text)))


def count_segments(text: str, encoding: SmsEncoding | None = None) -> int:
    """The exact number of segments ``text`` is sent as; 0 for an empty text.

    Up to the single-message limit it is one segment. Beyond it, segments are filled
    greedily with whole characters (an ESC pair or a surrogate pair never straddles two
    segments), which is how handsets and SMS centres split a message.
    """
    if not text:
        return 0
    encoding = encoding or encoding_of(text)
    total = count_units(text, encoding)
    if total <= SINGLE_LIMIT[encoding.value]:
        return 1
    capacity = CONCAT_LIMIT[encoding.value]
    segments, used = 1, 0
    for cost in _costs(text, encoding):
        if used + cost > capacity:
            segments += 1
            used = 0
        used += cost
    return segments


def analyse(text: str) -> SmsInfo:
    """Encoding, length in units, segment count and UCS-2 culprits of one SMS text."""
    encoding = encoding_of(text)
    return SmsInfo(
        encoding=encoding,
        units=count_units(text, encoding),
        segments=count_segments(text, encoding),
        non_gsm=non_gsm_chars(text),
    )
