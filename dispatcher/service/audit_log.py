"""Sealing and verifying the tamper-evident audit chain (rule AUDIT.chain).

The chain itself is pure (:mod:`dispatcher.domain.audit_chain`); here it meets the
database and the anchor file. The anchor file is append-only JSON lines, one head per
line (``{"seq": ..., "hash": ..., "at": ...}``): a copy of the chain's head kept outside
the database, so deleting the newest records (truncation) is detected as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dispatcher.domain.audit_chain import Anchor, Verdict, verify
from dispatcher.error import InputError
from dispatcher.store.chain import AuditChainStore


class AnchorFile:
    """Append-only heads of the chain, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, anchor: Anchor) -> None:
        """Write one anchor and flush it to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"seq": anchor.seq, "hash": anchor.hash, "at": anchor.at.isoformat()})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[Anchor]:
        """Every anchor written; a missing file is none. A line that is not an anchor is
        an error naming the file and line: a damaged anchor file proves nothing."""
        if not self.path.exists():
            return []
        anchors = []
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    anchors.append(
                        Anchor(
                            int(data["seq"]), str(data["hash"]), datetime.fromisoformat(data["at"])
                        )
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    raise InputError(f"{self.path}:{number}: not an audit anchor ({exc})") from None
        return anchors

    def last(self) -> Anchor | None:
        anchors = self.read()
        return anchors[-1] if anchors else None


@dataclass(frozen=True, slots=True)
class Sealed:
    head: Anchor | None
    anchored: bool


def seal(chain: AuditChainStore, anchors: AnchorFile, *, anchor: bool) -> Sealed:
    """Chain what is not chained yet; with ``anchor``, write the head to the anchor file
    (when it moved since the last anchor)."""
    head = chain.seal()
    if not anchor or head is None:
        return Sealed(head, False)
    last = anchors.last()
    if last is not None and last.seq == head.seq and last.hash == head.hash:
        return Sealed(head, False)
    anchors.append(head)
    return Sealed(head, True)


@dataclass(frozen=True, slots=True)
class Check:
    """What ``audit verify`` found: the chain's verdict and the records not sealed yet."""

    verdict: Verdict
    unsealed: int
    anchors: int


def check(chain: AuditChainStore, anchors: AnchorFile) -> Check:
    """Walk the whole chain against the anchors. Reads only: sealing first would chain
    records that were edited before they were sealed, so that is left to ``seal``."""
    written = anchors.read()
    return Check(verify(chain.chain(), written), chain.unsealed(), len(written))
