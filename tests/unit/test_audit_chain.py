"""Rule AUDIT.chain: the audit chain names the first record that was edited, deleted or
moved, and a chain cut short after an anchor."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.audit_chain import (
    GENESIS,
    PURGED,
    Anchor,
    Break,
    ChainRecord,
    detail_digest,
    record_hash,
    seal,
    verify,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def records(n: int, first_id: int = 1) -> list[ChainRecord]:
    return [
        ChainRecord(
            id=first_id + i,
            at=T0 + timedelta(seconds=i, microseconds=i),
            event="message_sent" if i % 2 else "message_queued",
            actor="system:sender",
            account_id=f"A-{i % 3}",
            message_id=f"m{i:031d}",
            detail=f'{{"attempt": {i}}}',
        )
        for i in range(n)
    ]


def sealed(rows: list[ChainRecord], head: Anchor | None = None) -> list[ChainRecord]:
    seals = {s.id: s for s in seal(head, rows)}
    return [
        dataclasses.replace(
            r,
            seq=seals[r.id].seq,
            prev_hash=seals[r.id].prev_hash,
            hash=seals[r.id].hash,
            detail_sha256=seals[r.id].detail_sha256,
        )
        for r in rows
    ]


def test_an_untouched_chain_is_intact_and_reports_its_head() -> None:
    chain = sealed(records(5))

    verdict = verify(chain)

    assert verdict.intact and verdict.sealed == 5
    assert verdict.head == Anchor(5, chain[-1].hash or "", chain[-1].at)
    assert chain[0].prev_hash == GENESIS
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]


def test_sealing_in_two_goes_makes_the_same_chain_as_in_one() -> None:
    rows = records(6)
    first = sealed(rows[:4])
    head = Anchor(4, first[-1].hash or "", first[-1].at)

    assert first + sealed(rows[4:], head) == sealed(rows)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event", "message_held"),
        ("actor", "user:mallory"),
        ("account_id", "A-999"),
        ("message_id", None),
        ("detail", '{"attempt": 99}'),
        ("at", T0 - timedelta(days=1)),
        ("id", 77),
        ("hash", "f" * 64),
        ("detail_sha256", "e" * 64),
    ],
)
def test_an_edited_record_is_named_as_changed(field: str, value: object) -> None:
    chain = sealed(records(6))
    chain[3] = dataclasses.replace(chain[3], **{field: value})

    verdict = verify(chain)

    assert verdict.broken is Break.CHANGED
    assert (verdict.at_seq, verdict.sealed) == (4, 3)
    assert verdict.record_id == chain[3].id


def test_a_deleted_record_is_named_by_the_gap_it_leaves() -> None:
    chain = sealed(records(6))
    del chain[2]

    verdict = verify(chain)

    assert verdict.broken is Break.MISSING
    assert verdict.at_seq == 3 and verdict.record_id == 4
    assert "3..3 are empty" in verdict.explanation


def test_records_swapped_in_place_are_named_as_reordered() -> None:
    chain = sealed(records(6))
    # Give the two records each other's place: the walk by seq meets record 5 at place 2.
    a, b = chain[1], chain[4]
    chain[1] = dataclasses.replace(b, seq=a.seq, prev_hash=a.prev_hash, hash=a.hash)
    chain[4] = dataclasses.replace(a, seq=b.seq, prev_hash=b.prev_hash, hash=b.hash)

    verdict = verify(chain)

    assert verdict.broken is Break.CHANGED  # same place, other content
    assert verdict.at_seq == 2 and verdict.record_id == 5


def test_a_record_moved_with_its_seal_breaks_the_link_after_it() -> None:
    chain = sealed(records(6))
    chain[1], chain[4] = (
        dataclasses.replace(chain[4], seq=2),
        dataclasses.replace(chain[1], seq=5),
    )

    verdict = verify(chain)

    assert verdict.broken is Break.REORDERED and verdict.at_seq == 2


def test_a_chain_cut_short_after_an_anchor_is_truncated() -> None:
    chain = sealed(records(6))
    anchor = Anchor(6, chain[-1].hash or "", T0)

    assert verify(chain, [anchor]).intact
    verdict = verify(chain[:4], [anchor])

    assert verdict.broken is Break.TRUNCATED
    assert verdict.at_seq == 5 and "ends at seq 4" in verdict.explanation
    assert verify([], [anchor]).broken is Break.TRUNCATED


def test_a_chain_rewritten_from_scratch_disagrees_with_the_anchor() -> None:
    original = sealed(records(4))
    anchor = Anchor(3, original[2].hash or "", T0)
    forged = records(4)
    forged[1] = dataclasses.replace(forged[1], detail='{"attempt": "forged"}')

    verdict = verify(sealed(forged), [anchor])  # a consistent chain, recomputed by a forger

    assert verdict.broken is Break.ANCHOR_MISMATCH and verdict.at_seq == 3


def test_the_hash_covers_the_place_the_link_and_the_detail() -> None:
    [r] = records(1)
    d = detail_digest(r.detail)
    assert record_hash(r, 1, GENESIS, d) != record_hash(r, 2, GENESIS, d)
    assert record_hash(r, 1, GENESIS, d) != record_hash(r, 1, "1" * 64, d)
    assert record_hash(r, 1, GENESIS, d) != record_hash(r, 1, GENESIS, detail_digest("{}"))
    # Offsets do not matter, only the instant.
    shifted = dataclasses.replace(r, at=r.at.astimezone(UTC).astimezone())
    assert record_hash(shifted, 1, GENESIS, d) == record_hash(r, 1, GENESIS, d)


def test_a_purged_detail_keeps_the_chain_intact_but_a_forged_digest_does_not() -> None:
    chain = sealed(records(4))
    chain[1] = dataclasses.replace(chain[1], detail=PURGED)

    assert verify(chain).intact

    chain[2] = dataclasses.replace(chain[2], detail=PURGED, detail_sha256=detail_digest(PURGED))
    verdict = verify(chain)
    assert verdict.broken is Break.CHANGED and verdict.at_seq == 3


@given(
    size=st.integers(min_value=1, max_value=30),
    data=st.data(),
)
def test_any_single_edit_is_caught_at_the_record_edited(size: int, data: st.DataObject) -> None:
    chain = sealed(records(size))
    victim = data.draw(st.integers(min_value=0, max_value=size - 1))
    new_detail = data.draw(st.text(max_size=20).filter(lambda t: t != chain[victim].detail))
    chain[victim] = dataclasses.replace(chain[victim], detail=new_detail)

    verdict = verify(chain)

    assert verdict.broken is Break.CHANGED
    assert verdict.at_seq == victim + 1 and verdict.sealed == victim


@given(size=st.integers(min_value=2, max_value=30), data=st.data())
def test_any_deletion_but_the_last_is_caught_where_it_was(size: int, data: st.DataObject) -> None:
    chain = sealed(records(size))
    victim = data.draw(st.integers(min_value=0, max_value=size - 2))
    del chain[victim]

    verdict = verify(chain)

    assert verdict.broken is Break.MISSING and verdict.at_seq == victim + 1
