"""dispatcher.heap: fewer collections, but reference cycles are still reclaimed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dispatcher import heap


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    heap.tune()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_tune_freezes_start_up_and_raises_the_young_threshold(tuned: None) -> None:
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == heap.THRESHOLDS


def test_cycles_made_after_tune_are_still_collected_without_an_explicit_collect(
    tuned: None,
) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    # Well past the young threshold of net allocations: the collector must have run.
    keep = [[] for _ in range(heap.THRESHOLDS[0] * 3)]
    assert gone() is None
    assert len(keep) == heap.THRESHOLDS[0] * 3
