"""Letters for the print house: staged one by one, handed over in batches via a drop folder.

``deliver`` compiles the letter (PDF/A-2b) and stages it durably in our own work
directory; ``hand_over`` (the sender calls it at the start and at the end of every send
run) gathers the staged letters into one batch per (stage, mail class): a merged PDF and
a CSV manifest written into the print house's drop folder under temporary names, fsynced,
renamed, and each followed by a ``.sha256`` file, the manifest's last of all (its
presence says the batch is complete). docs/DELIVERY.md describes the protocol.

Why staging and batches are separate steps: a letter must never be printed twice nor
lost. Every step moves files between state directories with atomic renames, so a run
that dies anywhere leaves a state the next instance (on the same folders) finishes:

``staged/``   ``<message_id>.pdf`` + ``.json`` (the JSON last: its presence = staged)
``open/B/``   ``plan.json`` (which letters batch B holds: written before any is moved)
              and the letters' PDFs; B is not yet complete in the drop folder
``dropped/B/`` B is complete in the drop folder; its messages are not yet recorded
``archive/B/`` recorded ``handed_to_print``; the letters' PDFs stay here (artifact_path)

A letter is in exactly one of these places, and a batch is planned once, so it is
dropped once. One process at a time hands over (an exclusive lock on ``.lock``).
"""

from __future__ import annotations

import asyncio
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from dispatcher.channel import HandedLetter, Outbound, PrintBatch, Receipt
from dispatcher.channel.batch_pdf import BatchPdfWriter
from dispatcher.error import PermanentDelivery, TemplateError, TransientDelivery
from dispatcher.spreadsheet import csv_safe

log = logging.getLogger(__name__)

MANIFEST_FIELDS: Final = (
    "batch_id",
    "sequence",
    "message_id",
    "account_id",
    "stage",
    "mail_class",
    "first_page",
    "page_count",
    "recipient_name",
    "address_line_1",
    "address_line_2",
    "address_line_3",
    "address_line_4",
    "address_line_5",
    "letter_sha256",
)
"""The columns of a batch manifest, in order (docs/DELIVERY.md)."""

_ADDRESS_LINES: Final = 5
_SAFE_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync it, rename it over ``path``
    and fsync the directory: afterwards the whole file is there, or the old state is.
    ``sync_dir=False`` leaves the directory to a later write's fsync (same directory)."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


class _Hashing:
    """A binary sink that hashes (and optionally forwards) what is written to it."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)


class PrintDropSink:
    """The ``print_drop`` letter sink (``sinks.letter = "print_drop"``).

    ``drop`` is the print house's folder; it is never created here (a missing mount
    must not turn into a local folder nobody collects). ``work`` is ours: staged letters,
    open batches and the archive. ``mail_class_by_stage`` picks each stage's mail class,
    ``mail_class`` the rest.
    """

    def __init__(
        self,
        drop: Path,
        work: Path,
        compile_pdf: Callable[[str], bytes],
        *,
        mail_class: str = "first_class",
        mail_class_by_stage: Mapping[str, str] | None = None,
    ) -> None:
        self.drop = drop
        self.work = work
        self._compile = compile_pdf
        self.mail_class = mail_class
        self.mail_class_by_stage = dict(mail_class_by_stage or {})
        self.staged = work / "staged"
        self.open = work / "open"
        self.dropped = work / "dropped"
        self.archive = work / "archive"

    def mail_class_of(self, stage: str) -> str:
        return self.mail_class_by_stage.get(stage, self.mail_class)

    # -- staging --------------------------------------------------------------------------
    async def deliver(self, message: Outbound) -> Receipt:
        """Compile the letter and stage it durably; it is handed over by :meth:`hand_over`."""
        try:
            pdf = await asyncio.to_thread(self._compile, message.body)
        except TemplateError as exc:
            raise PermanentDelivery(f"letter does not compile: {exc}") from exc
        path = await asyncio.to_thread(self._stage, message, pdf)
        return Receipt(
            provider_message_id=f"staged:{message.message_id}",
            artifact_path=str(path),
            deferred=True,
        )

    def _stage(self, message: Outbound, pdf: bytes) -> Path:
        name, *lines = message.recipient.split("\n")
        record = {
            "message_id": message.message_id,
            "account_id": message.account_id,
            "stage": message.stage,
            "mail_class": self.mail_class_of(message.stage),
            "attempt": message.attempt,
            "recipient_name": name,
            "address_lines": lines,
            "sha256": hashlib.sha256(pdf).hexdigest(),
        }
        path = self.staged / f"{_file_name(message.message_id)}.pdf"
        try:
            self.staged.mkdir(parents=True, exist_ok=True)
            # The record last: a letter is staged once its record exists (a PDF left alone
            # by a crash is ignored). The record's directory fsync covers both renames.
            _write_durable(path, pdf, sync_dir=False)
            _write_durable(path.with_suffix(".json"), json.dumps(record).encode())
        except OSError as exc:
            raise TransientDelivery(
                f"print staging folder {self.staged}: cannot write {path.name}: {exc.strerror}",
                code="print:staging",
            ) from exc
        return path

    # -- hand-over ------------------------------------------------------------------------
    async def hand_over(self, now: datetime) -> None:
        """Finish batches a crashed run left open, then batch and drop every staged letter.

        Raises TransientDelivery naming the folder when the drop folder is missing,
        unwritable or full; nothing is then reported handed, and the next call retries.
        """
        await asyncio.to_thread(self._hand_over, now)

    def _hand_over(self, now: datetime) -> None:
        try:
            for folder in (self.staged, self.open, self.dropped, self.archive):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientDelivery(
                f"print work folder {self.work}: {exc.strerror}", code="print:work"
            ) from exc
        with self._locked():
            for batch in sorted(self.open.iterdir()):
                if batch.is_dir():
                    self._drop(batch)
            for batch in self._plan(now):
                self._drop(batch)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One hand-over at a time across processes sharing the work folder."""
        with (self.work / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _plan(self, now: datetime) -> list[Path]:
        """Commit which staged letters go into which new batch, then move them there."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record_path in sorted(self.staged.glob("*.json")):
            record = _read_json(record_path)
            groups.setdefault((record["stage"], record["mail_class"]), []).append(record)
        planned = []
        for (stage, mail_class), records in sorted(groups.items()):
            batch_id = self._new_batch_id(now, stage, mail_class)
            folder = self.open / batch_id
            folder.mkdir()
            plan = {
                "batch_id": batch_id,
                "stage": stage,
                "mail_class": mail_class,
                "planned_at": now.isoformat(),
                "letters": sorted(records, key=lambda r: r["message_id"]),
            }
            # The plan is the commit point: from here on these letters belong to this
            # batch, wherever a crash leaves their files.
            _write_durable(folder / "plan.json", json.dumps(plan).encode())
            self._collect(folder, plan)
            planned.append(folder)
        return planned

    def _new_batch_id(self, now: datetime, stage: str, mail_class: str) -> str:
        base = f"{now:%Y%m%dT%H%M%SZ}-{_file_name(stage)}-{_file_name(mail_class)}"
        batch_id, n = base, 1
        while any((d / batch_id).exists() for d in (self.open, self.dropped, self.archive)):
            n += 1
            batch_id = f"{base}-{n}"
        return batch_id

    def _collect(self, folder: Path, plan: Mapping[str, Any]) -> None:
        """Move the plan's letters from ``staged/`` into the batch folder (idempotent)."""
        for record in plan["letters"]:
            name = _file_name(record["message_id"])
            source = self.staged / f"{name}.pdf"
            if source.exists():
                os.replace(source, folder / source.name)
            (self.staged / f"{name}.json").unlink(missing_ok=True)
        _fsync_dir(folder)
        _fsync_dir(self.staged)

    def _drop(self, folder: Path) -> None:
        """Write batch ``folder`` into the drop folder (unless it is already complete
        there), then move it to ``dropped/``."""
        plan = _read_json(folder / "plan.json")
        self._collect(folder, plan)
        batch_id = plan["batch_id"]
        done = folder / "dropped.json"
        if not done.exists():
            pdf_name, csv_name = f"{batch_id}.pdf", f"{batch_id}.csv"
            try:
                if not self.drop.is_dir():
                    raise FileNotFoundError(2, "does not exist or is not a folder")
                if (self.drop / f"{csv_name}.sha256").exists():
                    # Complete from an earlier attempt that died before recording it:
                    # work out the pages again, write nothing to the print house.
                    letters, _, _ = self._build(folder, plan, None, None)
                else:
                    letters = self._write_batch(folder, plan, pdf_name, csv_name)
            except OSError as exc:
                raise TransientDelivery(
                    f"print drop folder {self.drop}: cannot hand over batch {batch_id}: "
                    f"{exc.strerror or exc}",
                    code="print:drop",
                ) from exc
            record = {**plan, "letters": letters}
            _write_durable(done, json.dumps(record).encode())
        os.replace(folder, self.dropped / folder.name)
        _fsync_dir(self.open)
        _fsync_dir(self.dropped)
        log.info("print batch %s handed over (%d letters)", batch_id, len(plan["letters"]))

    def _write_batch(
        self, folder: Path, plan: Mapping[str, Any], pdf_name: str, csv_name: str
    ) -> list[dict[str, Any]]:
        pdf_tmp = self.drop / f".{pdf_name}.part"
        csv_tmp = self.drop / f".{csv_name}.part"
        try:
            with pdf_tmp.open("wb") as pdf_out, csv_tmp.open("w", encoding="utf-8") as csv_out:
                letters, pdf_sha, csv_sha = self._build(folder, plan, pdf_out, csv_out)
                for handle in (pdf_out, csv_out):
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(pdf_tmp, self.drop / pdf_name)
            os.replace(csv_tmp, self.drop / csv_name)
            _fsync_dir(self.drop)
            # Checksums last, the manifest's very last: its presence = batch complete.
            for name, digest in ((pdf_name, pdf_sha), (csv_name, csv_sha)):
                _write_durable(self.drop / f"{name}.sha256", f"{digest}  {name}\n".encode())
        except OSError:
            pdf_tmp.unlink(missing_ok=True)
            csv_tmp.unlink(missing_ok=True)
            raise
        return letters

    def _build(
        self,
        folder: Path,
        plan: Mapping[str, Any],
        pdf_out: BinaryIO | None,
        csv_out: IO[str] | None,
    ) -> tuple[list[dict[str, Any]], str, str]:
        """Stream the batch PDF and manifest; returns each letter's place and the digests.

        One letter is in memory at a time. A letter whose PDF is missing or differs from
        the digest taken when it was staged is left out and logged (its message stays
        ``sending`` and is reported as interrupted after the lease, for a person to see).
        """
        pdf = _Hashing(pdf_out)
        writer = BatchPdfWriter(pdf)
        manifest = io.StringIO()
        rows = csv.writer(manifest, lineterminator="\r\n")
        rows.writerow(MANIFEST_FIELDS)
        csv_digest = hashlib.sha256()

        def flush_rows() -> None:
            text = manifest.getvalue()
            manifest.seek(0)
            manifest.truncate()
            csv_digest.update(text.encode("utf-8"))
            if csv_out is not None:
                csv_out.write(text)

        letters: list[dict[str, Any]] = []
        for record in plan["letters"]:
            message_id = record["message_id"]
            path = folder / f"{_file_name(message_id)}.pdf"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                log.error("print batch %s: letter %s is missing", plan["batch_id"], message_id)
                continue
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                log.error(
                    "print batch %s: letter %s changed since staging", plan["batch_id"], message_id
                )
                continue
            first = writer.pages + 1
            pages = writer.append(data)
            lines = list(record["address_lines"])
            if len(lines) > _ADDRESS_LINES:
                lines[_ADDRESS_LINES - 1 :] = [", ".join(lines[_ADDRESS_LINES - 1 :])]
            lines += [""] * (_ADDRESS_LINES - len(lines))
            sequence = len(letters) + 1
            row = [plan["batch_id"], sequence, message_id, record["account_id"], plan["stage"]]
            row += [plan["mail_class"], first, pages, record["recipient_name"], *lines]
            row.append(record["sha256"])
            rows.writerow([csv_safe(v) for v in row])
            if sequence % 500 == 0:
                flush_rows()
            letters.append(
                {
                    "message_id": message_id,
                    "account_id": record["account_id"],
                    "attempt": record["attempt"],
                    "first_page": first,
                    "pages": pages,
                    "sha256": record["sha256"],
                }
            )
        writer.finish()
        flush_rows()
        return letters, pdf.digest.hexdigest(), csv_digest.hexdigest()

    # -- reporting ------------------------------------------------------------------------
    def handed(self) -> list[PrintBatch]:
        """Batches complete in the drop folder whose messages are not yet recorded."""
        found: list[PrintBatch] = []
        if not self.dropped.is_dir():
            return found
        for folder in sorted(self.dropped.iterdir()):
            record = _read_json(folder / "dropped.json")
            archived = self.archive / folder.name
            letters = tuple(
                HandedLetter(
                    message_id=letter["message_id"],
                    account_id=letter["account_id"],
                    attempt=letter["attempt"],
                    first_page=letter["first_page"],
                    pages=letter["pages"],
                    sha256=letter["sha256"],
                    artifact_path=str(archived / f"{_file_name(letter['message_id'])}.pdf"),
                )
                for letter in record["letters"]
            )
            found.append(
                PrintBatch(record["batch_id"], record["stage"], record["mail_class"], letters)
            )
        return found

    def acknowledge(self, batch_id: str) -> None:
        """The batch's messages are recorded: move it to the archive, never report it again."""
        folder = self.dropped / batch_id
        if folder.is_dir():
            os.replace(folder, self.archive / batch_id)
            _fsync_dir(self.dropped)
            _fsync_dir(self.archive)

    def pending(self) -> set[str]:
        """Messages staged, in an open batch, or handed over but not yet recorded."""
        ids: set[str] = set()
        if self.staged.is_dir():
            ids |= {_read_json(p)["message_id"] for p in self.staged.glob("*.json")}
        for state, name in ((self.open, "plan.json"), (self.dropped, "dropped.json")):
            if state.is_dir():
                for plan in state.glob(f"*/{name}"):
                    ids |= {letter["message_id"] for letter in _read_json(plan)["letters"]}
        return ids


def _file_name(value: str) -> str:
    """``value`` as a safe file-name part (message ids are hex; stage ids snake case)."""
    return _SAFE_NAME.sub("_", value)
