"""Where a letter's PDF is, and when it is not there, what became of it.

A letter that went out is archived as a PDF (the letter sink's ``letter/`` folder or the
print drop's ``archive/``, docs/DELIVERY.md), its path recorded on the message
(``artifact_path``). The collector's page serves that file; when it is not there the
collector must learn that the letter *was* produced and sent, and why its file is not
shown, not a bare "not found":

* **purged**: the retention purge of message content (rule RETENTION.purge) clears the
  recorded path in its transaction, then deletes the file; its ``account_purged`` record
  names the kind and the time, so "purged under retention on ..." is known;
* **missing**: a path is recorded but no file is there. Retention never leaves a path
  behind, so something outside dispatcher moved or deleted it (a folder cleaned, a disk
  restored without it);
* **outside**: the path recorded is not a PDF inside the folders configured now (they
  were changed, or the row was edited): never served, whatever is there (a path in the
  database is never trusted to point anywhere else).

Only the file's name is shown and logged, never its folders: the collector needs the
message and the name to ask for it; the server's layout is not theirs to see.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any

from dispatcher.domain.message import WENT_OUT
from dispatcher.domain.strategy import ChannelKind


class LetterFileState(StrEnum):
    ON_DISK = "on_disk"  # served
    NONE = "none"  # not a letter, or no PDF was ever recorded: nothing was archived
    PURGED = "purged"  # removed under retention (RETENTION.purge)
    MISSING = "missing"  # recorded, not on disk: moved or deleted outside dispatcher
    OUTSIDE = "outside"  # recorded outside the configured letter folders: not served


@dataclass(frozen=True, slots=True)
class LetterFile:
    """One letter message's PDF: where it is (``path``, only when on disk), or why not."""

    message_id: str
    state: LetterFileState
    status: str  # the message's status (sent, handed_to_print, queued, ...)
    sent_at: datetime | None = None
    path: Path | None = None
    file_name: str | None = None  # the recorded path's last part, never its folders
    purged_at: datetime | None = None

    @property
    def gone(self) -> bool:
        """The letter was archived as a PDF, and that PDF cannot be served now."""
        return self.state in (
            LetterFileState.PURGED,
            LetterFileState.MISSING,
            LetterFileState.OUTSIDE,
        )

    @property
    def summary(self) -> str:
        """A few words for the account's timeline, beside the letter."""
        return {
            LetterFileState.ON_DISK: "on disk",
            LetterFileState.NONE: "none",
            LetterFileState.PURGED: "purged under retention",
            LetterFileState.MISSING: "no longer on disk",
            LetterFileState.OUTSIDE: "not served (outside the letter folders)",
        }[self.state]

    @property
    def explanation(self) -> str:
        """What happened to the file, in a sentence a collector can act on."""
        if self.state is LetterFileState.PURGED:
            when = f" on {self.purged_at:%Y-%m-%d}" if self.purged_at else ""
            return (
                f"its PDF was purged under retention{when} (rule RETENTION.purge): the "
                "message record and its digest are kept, the file is not"
            )
        if self.state is LetterFileState.MISSING:
            return (
                f"its PDF {self.file_name} is no longer on disk: it was moved or deleted "
                "outside dispatcher (a letter folder cleaned, a disk restored without it); "
                "retention did not remove it. Ask operations to restore it from a backup"
            )
        if self.state is LetterFileState.OUTSIDE:
            return (
                f"its PDF {self.file_name} is recorded outside the letter folders configured "
                "now (they were changed, or the record was edited), so it is not served. "
                "Ask operations"
            )
        if self.state is LetterFileState.NONE:
            return f"it has no PDF (it is {self.status})"
        return f"its PDF is {self.file_name}"


def letter_file(
    row: Any, roots: Iterable[Path], content_purges: Sequence[datetime] = ()
) -> LetterFile:
    """The PDF of the letter message ``row`` (a message row mapping), looked for only
    inside ``roots`` (the folders our letter sinks write to: a path in the database is
    never trusted to point anywhere else). ``content_purges``: when the account's message
    content was purged (:meth:`~dispatcher.store.retention.RetentionStore.purges_of`)."""
    status = str(row["status"])
    base = {"message_id": str(row["message_id"]), "status": status, "sent_at": row["sent_at"]}
    if row["channel"] != ChannelKind.LETTER.value:
        return LetterFile(state=LetterFileState.NONE, **base)
    recorded = row["artifact_path"]
    if not recorded:
        went_out = status in {s.value for s in WENT_OUT}
        since = row["sent_at"] or row["created_at"]
        purged = [at for at in content_purges if since is None or at >= since]
        if went_out and purged:
            return LetterFile(state=LetterFileState.PURGED, purged_at=purged[-1], **base)
        return LetterFile(state=LetterFileState.NONE, **base)
    name = PurePath(str(recorded)).name
    path = Path(str(recorded)).resolve()
    inside = any(path.is_relative_to(Path(root).resolve()) for root in roots)
    if not inside or path.suffix != ".pdf":
        return LetterFile(state=LetterFileState.OUTSIDE, file_name=name, **base)
    if not path.is_file():
        return LetterFile(state=LetterFileState.MISSING, file_name=name, **base)
    return LetterFile(state=LetterFileState.ON_DISK, path=path, file_name=name, **base)
