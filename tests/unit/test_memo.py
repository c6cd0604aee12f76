"""LastObjectMemo: answers about the very object asked about, never an equal one."""

from __future__ import annotations

from datetime import UTC, datetime

from dispatcher.memo import LastObjectMemo


def test_answers_are_about_the_object_itself_not_an_equal_one() -> None:
    memo: LastObjectMemo[str, int] = LastObjectMemo()
    first = datetime(2026, 6, 10, 15, tzinfo=UTC)
    memo.put(first, "UTC", 1)
    assert memo.get(first, "UTC") == 1
    equal = datetime(2026, 6, 10, 15, tzinfo=UTC)
    assert equal == first and equal is not first
    assert memo.get(equal, "UTC") is None


def test_a_new_object_forgets_the_last_and_the_answers_stay_bounded() -> None:
    memo: LastObjectMemo[int, int] = LastObjectMemo(bound=3)
    a, b = object(), object()
    for key in range(5):
        memo.put(a, key, key * 10)
    assert [memo.get(a, key) for key in range(5)] == [0, 10, 20, None, None]
    memo.put(b, 0, 99)
    assert memo.get(a, 0) is None
    assert memo.get(b, 0) == 99
