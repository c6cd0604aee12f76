"""Template versions and four-eyes approval: the states a version goes through and who may
move it. Pure: no I/O, no clock; the service (``dispatcher.service.template_catalog``)
asks these functions before it writes anything.

A version is one exact wording of one template (channel, id, locale), named by its
content hash. Its life::

    draft ──approve──▶ approved ──retire──▶ retired
      │                                  (a newer version approved, or retired by hand)
      └────reject────▶ rejected

Only ``approved`` is ever sent. ``retired`` and ``rejected`` are final: to send an old
wording again it comes back as new content (e.g. its front matter ``version`` bumped),
a new draft that goes through four eyes like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class VersionState(StrEnum):
    """Where a template version is in its life (stored in ``template_version.state``)."""

    DRAFT = "draft"
    APPROVED = "approved"
    RETIRED = "retired"
    REJECTED = "rejected"


class VersionAction(StrEnum):
    """What a person (or the system, for a superseded version) does to a version."""

    APPROVE = "approve"
    REJECT = "reject"
    RETIRE = "retire"


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """A rule of the approval process, with its id and where it comes from."""

    id: str
    source: str


FOUR_EYES: Final = ApprovalRule(
    "template.four_eyes",
    "house rule HR-12: wording reaches customers only after a second person, not its "
    "author, approved it (four-eyes principle)",
)
LINT_CLEAN: Final = ApprovalRule(
    "template.lint_clean",
    "house rule HR-12; the disclosures lint checks: Reg F 12 CFR 1006.6(e) (opt-out), "
    "FDCPA §807(11) (debt-collector disclosure)",
)
LIFECYCLE: Final = ApprovalRule(
    "template.lifecycle",
    "house rule HR-12: draft → approved → retired (or draft → rejected); nothing else",
)

SYSTEM_PREFIX: Final = "system:"
"""Actors the program itself uses (``system:bootstrap``); no person may act as one."""

TRANSITIONS: Final[dict[tuple[VersionState, VersionAction], VersionState]] = {
    (VersionState.DRAFT, VersionAction.APPROVE): VersionState.APPROVED,
    (VersionState.DRAFT, VersionAction.REJECT): VersionState.REJECTED,
    (VersionState.APPROVED, VersionAction.RETIRE): VersionState.RETIRED,
}
"""Every allowed move; anything not listed is refused."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an action on a version is not allowed: the rule and a sentence for a person."""

    rule: ApprovalRule
    message: str

    def __str__(self) -> str:
        return f"{self.rule.id}: {self.message}"


def same_person(a: str, b: str) -> bool:
    """Whether two actor names are one person: case and surrounding spaces do not count.

    Why: ``Alice`` approving ``alice``'s draft is self-approval (HR-12).
    """
    return a.strip().casefold() == b.strip().casefold()


def check_actor(name: str) -> Refusal | None:
    """A person's name as given with ``--as``: not empty, not a ``system:`` actor."""
    if not name.strip():
        return Refusal(FOUR_EYES, "say who you are (--as NAME or DISPATCHER_USER)")
    if name.strip().casefold().startswith(SYSTEM_PREFIX):
        return Refusal(
            FOUR_EYES, f"{name.strip()!r}: names starting {SYSTEM_PREFIX!r} are the program's"
        )
    return None


def next_state(state: VersionState, action: VersionAction) -> VersionState | Refusal:
    """The state ``action`` leads to from ``state``, or why it is refused (HR-12)."""
    target = TRANSITIONS.get((state, action))
    if target is not None:
        return target
    allowed = sorted(_past(a) for (s, a) in TRANSITIONS if s is state)
    hint = f"; it can only be {' or '.join(allowed)}" if allowed else f"; {state} is final"
    article = "an" if state.value[0] in "aeiou" else "a"
    return Refusal(LIFECYCLE, f"{article} {state} version cannot be {_past(action)}{hint}")


def check_approval(state: VersionState, author: str, approver: str) -> Refusal | None:
    """May ``approver`` approve a version in ``state`` written by ``author``? (HR-12)

    Refused: anything but a draft; an approver who is the author (four eyes); a version
    without a named author (a ``system:`` one), since then only one person looked at it.
    """
    actor = check_actor(approver)
    if actor is not None:
        return actor
    moved = next_state(state, VersionAction.APPROVE)
    if isinstance(moved, Refusal):
        return moved
    if same_person(author, approver):
        return Refusal(
            FOUR_EYES,
            f"{approver.strip()} wrote this version and cannot approve it; a second person must",
        )
    if author.strip().casefold().startswith(SYSTEM_PREFIX):
        return Refusal(
            FOUR_EYES,
            f"this version has no named author ({author}); its author registers it with "
            "`templates sync --as NAME` and a second person approves",
        )
    return None


def _past(action: VersionAction) -> str:
    return {"approve": "approved", "reject": "rejected", "retire": "retired"}[action.value]
