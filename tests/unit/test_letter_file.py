"""What the collector is told about a letter's PDF (dispatcher/service/letter_file.py):
served only from the letter folders, and when it is not there, why, from what is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.service.letter_file import LetterFileState, letter_file

SENT = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)


def letter(path: Path | str | None, status: str = "sent", **extra: Any) -> dict[str, Any]:
    return {
        "message_id": "m1",
        "channel": "letter",
        "status": status,
        "sent_at": SENT if status == "sent" else None,
        "created_at": SENT - timedelta(hours=1),
        "artifact_path": None if path is None else str(path),
        **extra,
    }


def test_a_pdf_inside_a_letter_folder_is_served(tmp_path: Path) -> None:
    pdf = tmp_path / "letter" / "m1.pdf"
    pdf.parent.mkdir()
    pdf.write_bytes(b"%PDF-1.7")
    found = letter_file(letter(pdf), [tmp_path])
    assert (found.state, found.path, found.file_name, found.gone) == (
        LetterFileState.ON_DISK,
        pdf.resolve(),
        "m1.pdf",
        False,
    )


def test_a_recorded_pdf_not_on_disk_is_missing_and_retention_is_ruled_out(
    tmp_path: Path,
) -> None:
    found = letter_file(letter(tmp_path / "letter" / "m1.pdf"), [tmp_path], [SENT])
    assert (found.state, found.gone, found.path) == (LetterFileState.MISSING, True, None)
    assert "m1.pdf is no longer on disk" in found.explanation
    assert "retention did not remove it" in found.explanation
    assert str(tmp_path) not in found.explanation


def test_a_path_outside_the_letter_folders_or_not_a_pdf_is_never_served(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "passwd"
    elsewhere.parent.mkdir()
    elsewhere.write_text("root:x:0:0")
    sinks = tmp_path / "sinks"
    (sinks / "letter").mkdir(parents=True)
    (sinks / "letter" / "m1.txt").write_text("not a letter")
    for recorded in (elsewhere, sinks / "letter" / ".." / ".." / "etc" / "passwd"):
        found = letter_file(letter(recorded), [sinks])
        assert (found.state, found.path, found.gone) == (LetterFileState.OUTSIDE, None, True)
    found = letter_file(letter(sinks / "letter" / "m1.txt"), [sinks])
    assert found.state is LetterFileState.OUTSIDE and "not served" in found.explanation


def test_a_letter_that_went_out_without_a_path_after_a_content_purge_was_purged(
    tmp_path: Path,
) -> None:
    purged_at = SENT + timedelta(days=1200)
    found = letter_file(letter(None), [tmp_path], [SENT - timedelta(days=5), purged_at])
    assert (found.state, found.purged_at, found.gone) == (LetterFileState.PURGED, purged_at, True)
    assert f"purged under retention on {purged_at:%Y-%m-%d}" in found.explanation


def test_no_path_and_no_purge_since_or_never_sent_means_no_pdf(tmp_path: Path) -> None:
    # A purge before the letter went out is not what removed it.
    older = letter_file(letter(None), [tmp_path], [SENT - timedelta(days=1)])
    assert (older.state, older.gone) == (LetterFileState.NONE, False)
    queued = letter_file(letter(None, status="queued"), [tmp_path], [SENT + timedelta(days=9)])
    assert queued.state is LetterFileState.NONE and queued.explanation == (
        "it has no PDF (it is queued)"
    )
    sms = letter_file({**letter(tmp_path / "x.pdf"), "channel": "sms"}, [tmp_path])
    assert sms.state is LetterFileState.NONE
