"""Which accounts a plan batch defers to the planner's process, and how their rows are put
back in account order (dispatcher/service/planner.py: _reaching_out, _splice)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.service.planner import _reaching_out, _splice
from tests.factory import account


def _accounts(*people: tuple[str, str | None, str | None]) -> list:  # type: ignore[type-arg]
    return [account(account_id=i, phone=p, email=e) for i, p, e in people]


@pytest.mark.parametrize(
    ("people", "outside", "deferred"),
    [
        # Nobody shares anything with another batch: nothing is deferred.
        ([("a", "+16175550001", "a@x.com"), ("b", "+16175550002", None)], set(), set()),
        # Shared phone with an outside account: that account only.
        (
            [("a", "+16175550001", "a@x.com"), ("b", "+16175550002", "b@x.com")],
            {"+16175550001"},
            {"a"},
        ),
        # b shares a's email, c shares b's phone: a person is whoever shares either, so
        # the whole chain waits for the batches before.
        (
            [
                ("a", "+16175550001", "a@x.com"),
                ("b", "+16175550002", "a@x.com"),
                ("c", "+16175550002", "c@x.com"),
                ("d", "+16175550004", "d@x.com"),
            ],
            {"+16175550001"},
            {"a", "b", "c"},
        ),
        # The chain found in reverse account order is found all the same.
        (
            [
                ("a", "+16175550009", "a@x.com"),
                ("b", "+16175550002", "a@x.com"),
                ("c", "+16175550002", "out@x.com"),
            ],
            {"out@x.com"},
            {"a", "b", "c"},
        ),
        # No contact data at all: never linked to anyone.
        ([("a", None, None)], {"+16175550001"}, set()),
    ],
)
def test_the_accounts_deferred_are_those_linked_to_outside_the_batch(
    people: list[tuple[str, str | None, str | None]], outside: set[str], deferred: set[str]
) -> None:
    assert _reaching_out(_accounts(*people), outside) == deferred


@given(
    st.lists(st.tuples(st.sampled_from("pqr"), st.sampled_from("xyz")), min_size=1, max_size=8),
    st.sets(st.sampled_from(["p", "q", "r", "x", "y", "z"])),
)
def test_no_settled_account_shares_a_phone_or_email_with_a_deferred_one(
    keys: list[tuple[str, str]], outside: set[str]
) -> None:
    """The batch settles only persons wholly inside it: what it settles and what it defers
    never share a key, and nothing reaching outside is settled."""
    accounts = [account(account_id=f"A{i}", phone=p, email=e) for i, (p, e) in enumerate(keys)]
    deferred = _reaching_out(accounts, outside)
    settled = [a for a in accounts if a.account_id not in deferred]
    waiting = [a for a in accounts if a.account_id in deferred]
    settled_keys = {k for a in settled for k in (a.phone, a.email)}
    assert not settled_keys & {k for a in waiting for k in (a.phone, a.email)}
    assert not settled_keys & outside


@pytest.mark.parametrize(
    ("base", "extra", "cuts", "expected"),
    [
        ([1, 2, 3], [], [], [1, 2, 3]),
        ([1, 2, 3], ["a", "b"], [(0, 0, 2)], ["a", "b", 1, 2, 3]),
        ([1, 2, 3], ["a", "b", "c"], [(1, 0, 1), (3, 1, 3)], [1, "a", 2, 3, "b", "c"]),
        ([1, 2], ["a", "b"], [(1, 0, 0), (1, 0, 2)], [1, "a", "b", 2]),
    ],
)
def test_deferred_rows_go_back_where_account_order_puts_them(
    base: list[object],
    extra: list[object],
    cuts: list[tuple[int, int, int]],
    expected: list[object],
) -> None:
    assert _splice(base, extra, cuts) == expected
