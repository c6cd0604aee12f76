"""A memo of answers about the last object asked about, for pure lookups on hot paths."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LastObjectMemo(Generic[K, V]):
    """Answers about one object (the last asked about), one per key, at most ``bound``.

    Why by the object's identity and only the last one: a plan asks the same question
    about one instant or one creditor for every account (the date at ``now`` in each
    zone, the creditor's opt-out line per locale), and equality would be wrong where
    identity is not (equal datetimes can differ in fold, that is in instant). The object
    is kept, so its id cannot pass to another; keys come from account data, hence the
    bound. Swapping the whole state at once keeps concurrent readers consistent.
    """

    __slots__ = ("_bound", "_state")

    def __init__(self, bound: int = 1024) -> None:
        self._bound = bound
        self._state: tuple[object, dict[K, V]] = (None, {})

    def get(self, about: object, key: K) -> V | None:
        """The answer remembered for ``key`` about ``about``, if any."""
        seen, answers = self._state
        return answers.get(key) if about is seen else None

    def put(self, about: object, key: K, value: V) -> None:
        """Remember ``value`` for ``key`` about ``about``; a new object forgets the last."""
        seen, answers = self._state
        if about is not seen:
            answers = {}
            self._state = (about, answers)
        if len(answers) < self._bound:
            answers[key] = value
