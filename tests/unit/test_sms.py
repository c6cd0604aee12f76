"""SMS encoding and segment counting: GSM-7 vs UCS-2, 160/153 and 70/67, no split pairs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SmsEncoding,
    analyse,
    count_segments,
    encoding_of,
)

GSM = SmsEncoding.GSM7
UCS = SmsEncoding.UCS2


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", GSM, 0, 0),
        ("Hi", GSM, 2, 1),
        ("a" * 160, GSM, 160, 1),
        ("a" * 161, GSM, 161, 2),
        ("a" * 306, GSM, 306, 2),
        ("a" * 307, GSM, 307, 3),
        ("a" * 459, GSM, 459, 3),
        ("a" * 460, GSM, 460, 4),
        # Extension characters cost two septets: 80 euro signs fill one SMS exactly.
        ("€" * 80, GSM, 160, 1),
        ("€" * 81, GSM, 162, 2),
        ("^{}\\[~]|€\f", GSM, 20, 1),
        # The ESC pair of "{" does not fit in the last septet of segment 1: 3 segments,
        # where 306 septets would naively be 2.
        ("a" * 152 + "{" + "a" * 152, GSM, 306, 3),
        ("a" * 153 + "{" + "a" * 151, GSM, 306, 2),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r", GSM, 44, 1),
        # Anything outside GSM 03.38 forces UCS-2 for the whole message.
        ("It’s due", UCS, 8, 1),
        ("Hi “Jane”", UCS, 9, 1),
        ("ç", UCS, 1, 1),
        ("你" * 70, UCS, 70, 1),
        ("你" * 71, UCS, 71, 2),
        ("你" * 134, UCS, 134, 2),
        ("你" * 135, UCS, 135, 3),
        # Emoji outside the BMP are surrogate pairs: two units, never split.
        ("😀", UCS, 2, 1),
        ("😀" * 35, UCS, 70, 1),
        ("😀" * 36, UCS, 72, 2),
        ("😀" * 66, UCS, 132, 2),
        ("😀" * 67, UCS, 134, 3),
        ("你" * 66 + "😀" + "你" * 67, UCS, 135, 3),
        ("你" * 66 + "😀" + "你" * 66, UCS, 134, 3),
        ("a" * 159 + "😀", UCS, 161, 3),
    ],
    ids=lambda value: (
        f"{value[:6]!r}+{len(value)}" if isinstance(value, str) and len(value) > 12 else None
    ),
)
def test_encoding_units_and_segments(
    text: str, encoding: SmsEncoding, units: int, segments: int
) -> None:
    info = analyse(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)


def test_non_gsm_lists_the_culprits_once_in_order() -> None:
    info = analyse("It’s “due” ’")
    assert info.encoding is UCS
    assert info.non_gsm == ("’", "“", "”")
    assert analyse("plain").non_gsm == ()


def test_per_segment_is_the_single_limit_until_concatenated() -> None:
    assert analyse("a").per_segment == 160
    assert analyse("a" * 161).per_segment == 153
    assert analyse("你").per_segment == 70
    assert analyse("你" * 71).per_segment == 67


def test_esc_is_not_a_gsm_character_of_its_own() -> None:
    assert encoding_of("\x1b") is UCS


def brute_force_segments(text: str) -> int:
    """Encode to a stream of units and cut it, never after a lead unit (ESC, high surrogate)."""
    if not text:
        return 0
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        stream: list[tuple[int, bool]] = []  # (unit, is a lead that must not end a segment)
        for c in text:
            if c in GSM7_EXTENSION:
                stream.append((0x1B, True))
            stream.append((ord(c), False))
        single, concat = 160, 153
    else:
        data = text.encode("utf-16-le", "surrogatepass")
        codes = [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]
        stream = [(u, 0xD800 <= u <= 0xDBFF) for u in codes]
        single, concat = 70, 67
    if len(stream) <= single:
        return 1
    count, start = 0, 0
    while start < len(stream):
        end = min(start + concat, len(stream))
        if end < len(stream) and stream[end - 1][1]:
            end -= 1
        count += 1
        start = end
    return count


TEXT_CHARS = st.one_of(
    st.sampled_from(sorted(GSM7_BASIC)),
    st.sampled_from(sorted(GSM7_EXTENSION)),
    st.sampled_from(["你", "好", "’", "😀", "🎉", "é"]),
    st.characters(codec="utf-8"),
)
# Mostly one script, so long GSM-7 texts (where the 160/153 limits bite) are common.
TEXTS = st.one_of(
    st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION)), max_size=500),
    st.text(alphabet=st.sampled_from(["你", "😀", "a", "{"]), max_size=300),
    st.text(alphabet=TEXT_CHARS, max_size=400),
)


@given(TEXTS)
def test_segments_match_a_brute_force_splitter(text: str) -> None:
    assert count_segments(text) == brute_force_segments(text)


@given(TEXTS, TEXTS)
def test_segments_never_decrease_when_text_grows(text: str, more: str) -> None:
    assert count_segments(text + more) >= count_segments(text)
    assert count_segments(more + text) >= count_segments(text)


@given(TEXTS)
def test_gsm7_exactly_when_every_character_fits(text: str) -> None:
    fits = all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text)
    assert (encoding_of(text) is GSM) == fits
