"""Letters to the print house through a real drop folder: batches, manifest, crash safety."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from dispatcher.bootstrap import App, bootstrap, file_channels
from dispatcher.channel import BatchChannel, Outbound
from dispatcher.channel.memory import MemoryChannel
from dispatcher.channel.print_drop import MANIFEST_FIELDS, PrintDropSink
from dispatcher.domain.message import WENT_OUT, MessageStatus
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TransientDelivery
from dispatcher.settings import PrintDropSettings, SinkSettings
from dispatcher.store.sql import AUDIT
from dispatcher.template import TemplateSet, compile_pdf
from dispatcher.template.sample import sample_context
from tests.conftest import settings_for
from tests.factory import ROOT
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

TEMPLATES = TemplateSet.load(ROOT / "templates")
CLASSES = {"pre_legal": "certified"}


def letter(n: int, stage: str = "mid") -> Outbound:
    name = f"Customer Number{n}"
    context = sample_context("en-US", dpd=45)
    context["customer_name"] = name
    body = TEMPLATES.render(ChannelKind.LETTER, "mid_day15", "en-US", context).body
    return Outbound(
        message_id=f"{n:032x}",
        account_id=f"A-{n}",
        channel=ChannelKind.LETTER,
        recipient=f"{name}\n{n} Elm Street\nBOSTON, MA 02110\nUS",
        body=body,
        stage=stage,
        attempt=1,
    )


def sink(tmp_path: Path) -> PrintDropSink:
    """A fresh instance on the same folders each call: what a restarted process builds."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    return PrintDropSink(
        drop, tmp_path / "work", compile_pdf, mail_class="first_class", mail_class_by_stage=CLASSES
    )


def stage(tmp_path: Path, letters: list[Outbound]) -> None:
    channel = sink(tmp_path)
    for outbound in letters:
        receipt = asyncio.run(channel.deliver(outbound))
        assert receipt.deferred


def drop_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "drop").iterdir())


def manifest(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_staged_letters_go_into_one_batch_per_stage_and_mail_class(tmp_path: Path) -> None:
    stage(tmp_path, [letter(1), letter(2), letter(3), letter(4, "pre_legal")])
    assert drop_files(tmp_path) == []  # nothing reaches the print house before hand-over
    channel = sink(tmp_path)
    asyncio.run(channel.hand_over(NOW))

    ids = ["20260610T150000Z-mid-first_class", "20260610T150000Z-pre_legal-certified"]
    assert drop_files(tmp_path) == sorted(
        f"{b}.{ext}" for b in ids for ext in ("csv", "csv.sha256", "pdf", "pdf.sha256")
    )
    drop = tmp_path / "drop"
    for name in drop_files(tmp_path):
        if name.endswith(".sha256"):
            digest, target = (drop / name).read_text().split()
            assert target == name.removesuffix(".sha256")
            assert hashlib.sha256((drop / target).read_bytes()).hexdigest() == digest

    rows = manifest(drop / f"{ids[0]}.csv")
    assert list(rows[0]) == list(MANIFEST_FIELDS)
    assert [r["message_id"] for r in rows] == [f"{n:032x}" for n in (1, 2, 3)]
    batch = PdfReader(drop / f"{ids[0]}.pdf")
    assert len(batch.pages) == sum(int(r["page_count"]) for r in rows)
    handed = {h.batch_id: h for h in channel.handed()}
    assert set(handed) == set(ids)
    for r, handed_letter in zip(rows, handed[ids[0]].letters, strict=True):
        first = int(r["first_page"])
        # The letter's first page in the batch is addressed to that manifest row's person.
        assert r["recipient_name"] in batch.pages[first - 1].extract_text()
        assert r["mail_class"] == "first_class"
        assert r["address_line_1"].endswith("Elm Street")
        assert r["address_line_3"] == "US"
        assert r["address_line_5"] == ""
        archived = Path(handed_letter.artifact_path)
        assert handed_letter.message_id == r["message_id"]
        assert handed_letter.first_page == first
        assert r["letter_sha256"] == handed_letter.sha256
    (legal,) = manifest(drop / f"{ids[1]}.csv")
    assert legal["mail_class"] == "certified"
    assert legal["stage"] == "pre_legal"

    for batch_id in ids:
        channel.acknowledge(batch_id)
    assert sink(tmp_path).handed() == []
    assert sink(tmp_path).pending() == set()
    for handed_letter in handed[ids[0]].letters:
        archived = Path(handed_letter.artifact_path)
        assert hashlib.sha256(archived.read_bytes()).hexdigest() == handed_letter.sha256
    # Closing again hands nothing over twice.
    asyncio.run(sink(tmp_path).hand_over(NOW + timedelta(minutes=1)))
    assert len(drop_files(tmp_path)) == 8


def test_a_run_that_crashed_before_hand_over_is_finished_once_by_the_next(tmp_path: Path) -> None:
    letters = [letter(n) for n in range(1, 4)]
    stage(tmp_path, letters)  # ... and the process dies: hand_over is never called
    restarted = sink(tmp_path)
    assert restarted.pending() == {o.message_id for o in letters}
    asyncio.run(restarted.hand_over(NOW))
    asyncio.run(sink(tmp_path).hand_over(NOW + timedelta(seconds=1)))
    (csv_file,) = (tmp_path / "drop").glob("*.csv")
    assert sorted(r["message_id"] for r in manifest(csv_file)) == sorted(
        o.message_id for o in letters
    )
    # Dropped but never recorded (a crash before the database was written): reported
    # again by any later instance until acknowledged, then never.
    (reported,) = sink(tmp_path).handed()
    assert len(reported.letters) == 3
    sink(tmp_path).acknowledge(reported.batch_id)
    assert sink(tmp_path).handed() == []


def run_limited(tmp_path: Path, limit: int, *, die: bool) -> subprocess.CompletedProcess[str]:
    """Hand over in a child whose files may not grow past ``limit`` bytes: with ``die`` the
    kernel kills it (SIGXFSZ) in the middle of writing the batch, a real crash; without,
    the write fails like on a full disk."""
    script = textwrap.dedent(
        f"""
        import asyncio, resource, signal, sys
        from datetime import datetime, UTC
        from pathlib import Path
        from dispatcher.channel.print_drop import PrintDropSink
        from dispatcher.error import TransientDelivery
        from dispatcher.template import compile_pdf
        if {die!r}:
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        root = Path({str(tmp_path)!r})
        channel = PrintDropSink(root / "drop", root / "work", compile_pdf)
        try:
            asyncio.run(channel.hand_over(datetime(2026, 6, 10, 15, tzinfo=UTC)))
        except TransientDelivery as exc:
            print(exc)
            sys.exit(3)
        """
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_crash_while_writing_the_batch_is_finished_once_later(tmp_path: Path) -> None:
    letters = [letter(n) for n in range(1, 6)]
    stage(tmp_path, letters)
    one_letter = len((tmp_path / "work" / "staged" / f"{1:032x}.pdf").read_bytes())
    crashed = run_limited(tmp_path, 2 * one_letter, die=True)
    assert crashed.returncode == -25, crashed.stderr  # killed by SIGXFSZ mid-write
    # The batch was planned, its PDF half written under a temporary name, nothing final.
    assert list((tmp_path / "work" / "open").glob("*/plan.json"))
    assert all(name.startswith(".") for name in drop_files(tmp_path))

    asyncio.run(sink(tmp_path).hand_over(NOW + timedelta(hours=1)))
    names = drop_files(tmp_path)
    assert not [n for n in names if n.startswith(".")]
    (csv_name,) = [n for n in names if n.endswith(".csv")]
    assert csv_name.startswith("20260610T150000Z-mid")  # the batch planned before the crash
    rows = manifest(tmp_path / "drop" / csv_name)
    assert sorted(r["message_id"] for r in rows) == sorted(o.message_id for o in letters)
    assert len(PdfReader(tmp_path / "drop" / csv_name.replace(".csv", ".pdf")).pages) == 5


def test_a_full_disk_is_transient_names_the_folder_and_leaves_no_file(tmp_path: Path) -> None:
    letters = [letter(n) for n in range(1, 4)]
    stage(tmp_path, letters)
    failed = run_limited(tmp_path, 40_000, die=False)
    assert failed.returncode == 3, failed.stderr
    assert f"print drop folder {tmp_path / 'drop'}" in failed.stdout
    assert drop_files(tmp_path) == []
    assert sink(tmp_path).handed() == []
    assert sink(tmp_path).pending() == {o.message_id for o in letters}
    asyncio.run(sink(tmp_path).hand_over(NOW))
    assert len(drop_files(tmp_path)) == 4


def test_a_full_disk_while_staging_a_letter_is_transient_and_stages_nothing(
    tmp_path: Path,
) -> None:
    """The disk fills while a letter is staged (before any batch): the error names the
    staging folder and is transient (the sender retries the message later), nothing is
    staged half, and the retry stages it once and it is batched once."""
    (tmp_path / "drop").mkdir()
    script = textwrap.dedent(
        f"""
        import asyncio, resource, sys
        from pathlib import Path
        from dispatcher.channel.print_drop import PrintDropSink
        from dispatcher.error import TransientDelivery
        from dispatcher.template import compile_pdf
        from tests.integration.test_print_drop import letter
        root = Path({str(tmp_path)!r})
        channel = PrintDropSink(root / "drop", root / "work", compile_pdf)
        outbound = letter(7)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000, 2_000))  # less than one PDF
        try:
            asyncio.run(channel.deliver(outbound))
        except TransientDelivery as exc:
            print(exc)
            sys.exit(3)
        """
    )
    failed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert f"print staging folder {tmp_path / 'work' / 'staged'}" in failed.stdout
    assert "File too large" in failed.stdout or "No space" in failed.stdout
    assert sink(tmp_path).pending() == set()  # nothing staged, not even in part
    stage(tmp_path, [letter(7)])
    assert sink(tmp_path).pending() == {f"{7:032x}"}
    asyncio.run(sink(tmp_path).hand_over(NOW))
    (csv_name,) = [n for n in drop_files(tmp_path) if n.endswith(".csv")]
    rows = manifest(tmp_path / "drop" / csv_name)
    assert [r["message_id"] for r in rows] == [f"{7:032x}"]


def test_an_unusable_drop_folder_is_transient_and_hands_nothing_over(tmp_path: Path) -> None:
    stage(tmp_path, [letter(1)])
    channel = PrintDropSink(tmp_path / "missing", tmp_path / "work", compile_pdf)
    with pytest.raises(TransientDelivery, match=f"print drop folder {tmp_path / 'missing'}"):
        asyncio.run(channel.hand_over(NOW))
    assert not (tmp_path / "missing").exists()  # never created: it may be an absent mount
    assert channel.handed() == []
    assert channel.pending() == {f"{1:032x}"}


# -- through the sender, on a real database ---------------------------------------------


def print_app(tmp_path: Path, database_url: str) -> tuple[App, PrintDropSink]:
    channel = PrintDropSink(
        tmp_path / "drop", tmp_path / "work", compile_pdf, mail_class_by_stage=CLASSES
    )
    settings = settings_for(tmp_path, database_url)
    others = {ChannelKind.SMS: MemoryChannel(), ChannelKind.EMAIL: MemoryChannel()}
    wired = bootstrap(settings, channels={**others, ChannelKind.LETTER: channel})
    wired.store.create_schema()
    return wired, channel


def test_letters_are_handed_to_print_only_once_their_batch_is_complete(
    tmp_path: Path, database_url: str
) -> None:
    wired, _ = print_app(tmp_path, database_url)
    # 45 days past due: the mid stage's letter; 181: the pre-legal final notice.
    load(wired, tmp_path, [row("A-1", days_ago(45)), row("A-2", days_ago(181))])
    wired.planner().plan(NOW)
    (tmp_path / "drop").write_text("not a folder")  # the print house's mount is broken

    report = asyncio.run(wired.sender().send(NOW))
    letters = messages(wired, channel="letter")
    assert [m["status"] for m in letters] == ["sending", "sending"]
    assert report.errors[("letter", "print:drop")] == 1  # the hand-over at the end of the run
    # A lease later the letters are not taken for interrupted: they are safely staged.
    asyncio.run(wired.sender().reconcile(NOW + timedelta(hours=2), report))
    assert [m["status"] for m in messages(wired, channel="letter")] == ["sending", "sending"]

    (tmp_path / "drop").unlink()
    (tmp_path / "drop").mkdir()
    later = NOW + timedelta(hours=3)
    report = asyncio.run(wired.sender().send(later))
    assert report.counts[("letter", "handed_to_print")] == 2
    handed = messages(wired, channel="letter")
    assert {m["status"] for m in handed} == {MessageStatus.HANDED_TO_PRINT.value}
    by_stage = {m["stage"]: m for m in handed}
    assert by_stage["pre_legal"]["provider_message_id"].endswith("-pre_legal-certified")
    assert by_stage["mid"]["provider_message_id"].endswith("-mid-first_class")
    for m in handed:
        assert m["sent_at"] is not None
        assert Path(m["artifact_path"]).read_bytes().startswith(b"%PDF")
    # handed_to_print counts as went out: caps see it, a new plan sends nothing again.
    assert MessageStatus.HANDED_TO_PRINT in WENT_OUT
    accounts = [wired.store.account("A-1")]
    since = NOW - timedelta(days=30)
    contacts = wired.store.contacts(accounts, since, WENT_OUT)
    letters_out = [c.message_id for c in contacts if c.channel is ChannelKind.LETTER]
    assert letters_out == [by_stage["mid"]["message_id"]]
    asyncio.run(wired.sender().send(later + timedelta(minutes=5)))
    wired.planner().plan(later + timedelta(minutes=10))
    assert len(messages(wired, channel="letter")) == 2
    with wired.store.engine.connect() as conn:
        events = [
            r.event for r in conn.execute(select(AUDIT).where(AUDIT.c.event.like("message_%")))
        ]
    assert events.count("message_handed_to_print") == 2
    assert events.count("message_staged") == 2
    wired.store.engine.dispose()


def test_a_batch_dropped_but_not_recorded_is_recorded_by_the_next_run(
    tmp_path: Path, database_url: str
) -> None:
    wired, channel = print_app(tmp_path, database_url)
    (tmp_path / "drop").mkdir()
    load(wired, tmp_path, [row("A-1", days_ago(45))])
    wired.planner().plan(NOW)
    # Stage through the sender, but let the hand-over fail, as if the process died then.
    (tmp_path / "drop").rmdir()
    asyncio.run(wired.sender().send(NOW))
    (tmp_path / "drop").mkdir()
    asyncio.run(channel.hand_over(NOW))  # dropped ... and the process dies before recording
    assert [m["status"] for m in messages(wired, channel="letter")] == ["sending"]

    restarted, _ = print_app(tmp_path, database_url)
    report = asyncio.run(restarted.sender().send(NOW + timedelta(minutes=1)))
    assert report.counts[("letter", "handed_to_print")] == 1
    (m,) = messages(restarted, channel="letter")
    assert m["status"] == "handed_to_print"
    assert len([p for p in (tmp_path / "drop").iterdir() if p.suffix == ".pdf"]) == 1
    restarted.store.engine.dispose()
    wired.store.engine.dispose()


def test_the_letter_pdf_in_the_batch_is_the_staged_one(tmp_path: Path) -> None:
    stage(tmp_path, [letter(7)])
    staged = (tmp_path / "work" / "staged" / f"{7:032x}.pdf").read_bytes()
    asyncio.run(sink(tmp_path).hand_over(NOW))
    (pdf,) = (tmp_path / "drop").glob("*.pdf")
    own = PdfReader(io.BytesIO(staged)).pages[0].extract_text()
    assert PdfReader(pdf).pages[0].extract_text() == own
    assert "Customer Number7" in own


def test_settings_choose_the_print_drop_sink_and_its_mail_classes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path).model_copy(
        update={
            "sinks": SinkSettings(directory=tmp_path / "sink", letter="print_drop"),
            "print_drop": PrintDropSettings(
                directory=tmp_path / "drop",
                work_directory=tmp_path / "work",
                mail_class_by_stage={"late": "certified_return_receipt"},
            ),
        }
    )
    channel = file_channels(settings)[ChannelKind.LETTER]
    assert isinstance(channel, PrintDropSink)
    assert isinstance(channel, BatchChannel)
    assert channel.drop == tmp_path / "drop"
    assert channel.mail_class_of("late") == "certified_return_receipt"
    assert channel.mail_class_of("mid") == "first_class"
    assert not isinstance(file_channels(settings_for(tmp_path))[ChannelKind.LETTER], BatchChannel)
