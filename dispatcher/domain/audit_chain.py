"""The tamper-evident audit chain: each sealed audit record carries the hash of the one
before it and of its own content, so editing, deleting or reordering records breaks it.

Pure: records in, hashes and a verdict out. Records are *sealed* into the chain some time
after they are written (by one sealer at a time, in the order it sees them), so writers
never wait on each other; ``seq`` is the record's place in the chain, 1, 2, 3, ...

Rule AUDIT.chain (house rule HR-20; supports Reg F 12 CFR 1006.100 record retention and the
auditor's "prove what was sent"): every sealed record's hash is
``sha256(canonical JSON of [seq, prev_hash, id, at, event, actor, account_id, message_id,
detail_sha256])``; the first record's ``prev_hash`` is :data:`GENESIS`.

The chain covers the *digest* of the detail, not the detail itself, so that personal data
past its retention period can be purged (the detail replaced by :data:`PURGED`) while the
chain still verifies: the digest stays, and proves what was there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

GENESIS = "0" * 64
# The detail of a record whose content was purged past retention (rule RETENTION.purge).
PURGED = '{"purged": true}'


@dataclass(frozen=True, slots=True)
class ChainRecord:
    """One audit record as the chain sees it. ``seq``/``prev_hash``/``hash`` are None
    until it is sealed."""

    id: int
    at: datetime
    event: str
    actor: str
    account_id: str | None
    message_id: str | None
    detail: str
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None
    detail_sha256: str | None = None

    @property
    def purged(self) -> bool:
        return self.detail == PURGED


@dataclass(frozen=True, slots=True)
class Seal:
    """Where one record goes in the chain."""

    id: int
    seq: int
    prev_hash: str
    hash: str
    detail_sha256: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """The chain's head at some moment, kept outside the database (a file, the log), so a
    chain cut short after it is detected."""

    seq: int
    hash: str
    at: datetime


class Break(StrEnum):
    """How a chain can be broken; each names what an auditor must look at."""

    CHANGED = "changed"  # the record's content (or its stored hash) no longer matches
    MISSING = "missing"  # a place in the chain is empty: records were deleted
    REORDERED = "reordered"  # the record does not follow the one before it
    TRUNCATED = "truncated"  # the chain ends before an anchor's head
    ANCHOR_MISMATCH = "anchor_mismatch"  # the record at an anchor's place has another hash


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of walking the chain: ``broken`` is None when it is intact."""

    sealed: int
    head: Anchor | None
    broken: Break | None = None
    at_seq: int | None = None
    record_id: int | None = None
    explanation: str = ""

    @property
    def intact(self) -> bool:
        return self.broken is None


def detail_digest(detail: str) -> str:
    return hashlib.sha256(detail.encode("utf-8")).hexdigest()


def record_hash(record: ChainRecord, seq: int, prev_hash: str, digest: str) -> str:
    """The hash of ``record`` (its detail digested as ``digest``) sealed at ``seq`` after
    a record hashed ``prev_hash``."""
    at = record.at.astimezone(UTC).isoformat(timespec="microseconds")
    canonical = json.dumps(
        [
            seq,
            prev_hash,
            record.id,
            at,
            record.event,
            record.actor,
            record.account_id,
            record.message_id,
            digest,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seal(head: Anchor | None, records: Sequence[ChainRecord]) -> list[Seal]:
    """Chain ``records`` (unsealed, in the order the sealer saw them) after ``head``."""
    seq, prev = (head.seq, head.hash) if head else (0, GENESIS)
    seals: list[Seal] = []
    for record in records:
        seq += 1
        detail = detail_digest(record.detail)
        digest = record_hash(record, seq, prev, detail)
        seals.append(Seal(record.id, seq, prev, digest, detail))
        prev = digest
    return seals


def verify(records: Iterable[ChainRecord], anchors: Sequence[Anchor] = ()) -> Verdict:
    """Walk the sealed records in ``seq`` order and name the first that breaks the chain.

    ``records`` must be the sealed records ordered by ``seq`` (a stream: a chain of
    millions is never held in memory). ``anchors`` are heads recorded earlier outside the
    database; each must still be in the chain with the same hash.
    """
    by_seq = {a.seq: a for a in anchors}
    expected_seq, prev = 1, GENESIS
    head: Anchor | None = None
    count = 0
    for record in records:
        assert record.seq is not None, "verify walks sealed records only"
        if record.seq != expected_seq:
            return Verdict(
                count,
                head,
                Break.MISSING,
                expected_seq,
                record.id,
                f"chain places {expected_seq}..{record.seq - 1} are empty before record "
                f"{record.id} (seq {record.seq}): records were deleted",
            )
        if record.prev_hash != prev:
            return Verdict(
                count,
                head,
                Break.REORDERED,
                record.seq,
                record.id,
                f"record {record.id} (seq {record.seq}) does not follow the record before it "
                "(its prev_hash differs): records were moved or replaced",
            )
        detail = record.detail_sha256 or ""
        edited = not record.purged and detail_digest(record.detail) != detail
        if edited or record_hash(record, record.seq, prev, detail) != record.hash:
            return Verdict(
                count,
                head,
                Break.CHANGED,
                record.seq,
                record.id,
                f"record {record.id} (seq {record.seq}) was changed after it was sealed",
            )
        anchor = by_seq.get(record.seq)
        if anchor is not None and anchor.hash != record.hash:
            return Verdict(
                count,
                head,
                Break.ANCHOR_MISMATCH,
                record.seq,
                record.id,
                f"record {record.id} (seq {record.seq}) differs from the anchor written at "
                f"{anchor.at.isoformat()}: the chain was rewritten from there on",
            )
        count += 1
        head = Anchor(record.seq, record.hash, record.at)
        prev, expected_seq = record.hash, record.seq + 1
    last = max(anchors, key=lambda a: a.seq, default=None)
    if last is not None and (head is None or head.seq < last.seq):
        ends = head.seq if head else 0
        return Verdict(
            count,
            head,
            Break.TRUNCATED,
            ends + 1,
            None,
            f"the chain ends at seq {ends}, but an anchor written at {last.at.isoformat()} "
            f"saw it reach seq {last.seq}: records at the end were deleted",
        )
    return Verdict(count, head)
