"""What the account search makes of what was typed (dispatcher/domain/search.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.search import fts_phrase, like_pattern, search_terms


@pytest.mark.parametrize(
    ("query", "region", "words", "digits"),
    [
        ("Jane Doe", "US", ("Jane", "Doe"), ()),
        ("  jane   doe  ", "US", ("jane", "doe"), ()),
        ("jo", "US", (), ()),  # too short for the index
        ("jo smith", "US", ("smith",), ()),
        ("(617) 555-0142", "US", (), ("6175550142",)),
        ("+1 617 555 0142", "US", (), ("16175550142",)),
        ("617.555", "US", (), ("617555",)),
        ("07911 123456", "GB", (), ("07911123456", "447911123456")),  # trunk 0 dropped too
        ("12", "US", (), ()),
        ("AC-1002", "US", ("AC-1002",), ()),
        ("jane@example", "US", ("jane@example",), ()),
        ("' OR 1=1 --", "US", ("1=1",), ()),  # text to find, "'", "OR", "--" too short
    ],
)
def test_queries_become_words_and_phone_digits(
    query: str, region: str, words: tuple[str, ...], digits: tuple[str, ...]
) -> None:
    terms = search_terms(query, region)
    assert (terms.words, terms.phone_digits) == (words, digits)


def test_the_whole_query_is_kept_for_an_exact_id_of_any_length() -> None:
    assert search_terms(" A1 ").text == "A1"
    assert not search_terms(" A1 ").searchable
    assert search_terms("").empty


@pytest.mark.parametrize(
    ("typed", "pattern"),
    [("100%", "%100\\%%"), ("a_b", "%a\\_b%"), ("c:\\x", "%c:\\\\x%"), ("doe", "%doe%")],
)
def test_like_wildcards_typed_are_characters(typed: str, pattern: str) -> None:
    assert like_pattern(typed) == pattern


@given(st.text(max_size=300))
def test_fts_phrases_are_always_one_closed_string(text: str) -> None:
    """Whatever is typed, it stays inside one FTS5 string: no operator can escape it."""
    phrase = fts_phrase(text)
    assert phrase.startswith('"') and phrase.endswith('"')
    inner = phrase[1:-1]
    assert inner.replace('""', "").count('"') == 0
    assert inner.replace('""', '"') == text
