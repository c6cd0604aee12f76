"""The life of a template version and the four-eyes rule (house rule HR-12), as tables."""

from __future__ import annotations

import pytest

from dispatcher.domain.template_version import (
    FOUR_EYES,
    LIFECYCLE,
    TRANSITIONS,
    Refusal,
    VersionAction,
    VersionState,
    check_actor,
    check_approval,
    next_state,
    same_person,
)

D, A, T, R = (
    VersionState.DRAFT,
    VersionState.APPROVED,
    VersionState.RETIRED,
    VersionState.REJECTED,
)


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (D, VersionAction.APPROVE, A),
        (D, VersionAction.REJECT, R),
        (D, VersionAction.RETIRE, None),
        (A, VersionAction.RETIRE, T),
        (A, VersionAction.APPROVE, None),
        (A, VersionAction.REJECT, None),
        (T, VersionAction.APPROVE, None),
        (T, VersionAction.REJECT, None),
        (T, VersionAction.RETIRE, None),
        (R, VersionAction.APPROVE, None),
        (R, VersionAction.REJECT, None),
        (R, VersionAction.RETIRE, None),
    ],
)
def test_state_machine(
    state: VersionState, action: VersionAction, expected: VersionState | None
) -> None:
    moved = next_state(state, action)
    if expected is None:
        assert isinstance(moved, Refusal)
        assert moved.rule is LIFECYCLE
        assert f"{state.value} version cannot be" in moved.message
    else:
        assert moved is expected


def test_every_state_but_draft_and_approved_is_final() -> None:
    sources = {state for state, _action in TRANSITIONS}
    assert sources == {D, A}
    assert "final" in str(next_state(T, VersionAction.APPROVE))


@pytest.mark.parametrize(
    ("state", "author", "approver", "rule"),
    [
        (D, "alice", "bob", None),
        (D, "alice", "alice", FOUR_EYES),
        (D, "Alice", " alice ", FOUR_EYES),  # case and spaces do not make a second person
        (D, "system:bootstrap", "bob", FOUR_EYES),  # nobody named wrote it
        (D, "alice", "system:bootstrap", FOUR_EYES),  # the program never approves
        (D, "alice", "   ", FOUR_EYES),
        (A, "alice", "bob", LIFECYCLE),
        (T, "alice", "bob", LIFECYCLE),
        (R, "alice", "bob", LIFECYCLE),
    ],
)
def test_approval_needs_a_draft_and_a_second_named_person(
    state: VersionState, author: str, approver: str, rule: object
) -> None:
    refusal = check_approval(state, author, approver)
    if rule is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.rule is rule
        assert str(refusal).startswith(f"{refusal.rule.id}: ")


def test_self_approval_says_who_and_what_to_do() -> None:
    refusal = check_approval(D, "alice", "alice")
    assert refusal is not None
    assert str(refusal) == (
        "template.four_eyes: alice wrote this version and cannot approve it; a second person must"
    )


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("ann", "ann", True), ("Ann", "ANN ", True), ("ann", "anne", False), ("", " ", True)],
)
def test_same_person(a: str, b: str, same: bool) -> None:
    assert same_person(a, b) is same


@pytest.mark.parametrize(
    ("name", "ok"),
    [("bob", True), ("Bob Smith", True), ("", False), ("  ", False), ("System:x", False)],
)
def test_actor_names(name: str, ok: bool) -> None:
    assert (check_actor(name) is None) is ok


def test_rules_carry_an_id_and_a_house_rule_source() -> None:
    for rule in (FOUR_EYES, LIFECYCLE):
        assert rule.id.startswith("template.")
        assert "house rule HR-12" in rule.source
