"""The real command line, run as a user would: a subprocess in a fresh directory."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import write_csv
from tests.factory import ROOT
from tests.integration.test_pipeline import row

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)


def settings_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f"{extra}\n"
        f'[sinks]\ndirectory = "{tmp_path / "sink"}"\n'
    )
    return path


def run(tmp_path: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISPATCHER_CONFIG": str(config or settings_file(tmp_path)),
        "COLUMNS": "200",
    }
    env.pop("DISPATCHER_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def days_ago(n: int) -> str:
    return (NOW - timedelta(days=n)).date().isoformat()


@pytest.fixture
def initialised(tmp_path: Path) -> Path:
    result = run(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    return tmp_path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[send]\nmax_attempts = 0", "send.max_attempts"),
        ("[plan]\nbatch_size = 'many'", "plan.batch_size"),
        ("no_such_key = 1", "no_such_key"),
        ("database_url = ", "not valid TOML"),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_file_and_key(
    tmp_path: Path, extra: str, expected: str
) -> None:
    result = run(tmp_path, "init", config=settings_file(tmp_path, extra))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "settings.toml" in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_strategy_exits_2_naming_the_key(tmp_path: Path) -> None:
    strategy = tmp_path / "strategy.toml"
    strategy.write_text(
        '[[stages]]\nid = "early"\ndpd_from = 1\n'
        'steps = [{ id = "day1", day = 1, channel = "fax", template = "x" }]\n'
    )
    config = settings_file(tmp_path)
    config.write_text(
        config.read_text().replace(str(ROOT / "config" / "strategy.toml"), str(strategy))
    )
    result = run(tmp_path, "init", config=config)
    assert result.returncode == 2
    assert "strategy.toml: stages.0.steps.0.channel" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_settings_file_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, "plan", config=tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "nope.toml: file not found" in result.stderr


def test_init_writes_example_settings_when_missing(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "settings.toml"
    result = run(tmp_path, "init", config=config)
    # The example points at the relative templates/ and config/ of a deployment, which this
    # empty directory lacks: init says so, naming the file, after writing the example.
    assert config.exists()
    assert f"wrote example settings to {config}" in result.stdout
    assert result.returncode == 2
    assert "strategy.toml: file not found" in result.stderr
    written = tomllib.loads(config.read_text())
    assert written["send"]["max_attempts"] == 5
    assert written["database_url"] == "sqlite:///var/dispatcher.db"


def test_commands_refuse_an_uninitialised_database(tmp_path: Path) -> None:
    result = run(tmp_path, "plan", "--now", NOW.isoformat())
    assert result.returncode == 2 and "dispatcher init" in result.stderr


def test_now_without_offset_is_refused(initialised: Path) -> None:
    result = run(initialised, "plan", "--now", "2026-06-10T09:00")
    assert result.returncode == 2 and "no UTC offset" in result.stderr


def test_import_reports_rejects_and_keeps_good_rows(initialised: Path) -> None:
    csv_path = write_csv(
        initialised / "accounts.csv",
        [
            row("A-1", days_ago(1)),
            row("A-2", "2026-02-30"),
            row("A-3", days_ago(2), currency="XXY"),
            row("A-4", days_ago(3)),
        ],
    )
    result = run(initialised, "import", "accounts", str(csv_path))
    assert result.returncode == 1
    assert "4 rows, 2 new, 0 updated, 2 rejected" in result.stdout
    assert "line 3" in result.stderr and "due_date" in result.stderr
    assert "line 4" in result.stderr and "currency" in result.stderr
    rejects = (initialised / "accounts.rejects.csv").read_text()
    assert "A-2" in rejects and "A-3" in rejects and "A-1" not in rejects
    # A clean file exits 0.
    clean = write_csv(initialised / "clean.csv", [row("A-1", days_ago(1))])
    assert run(initialised, "import", "accounts", str(clean)).returncode == 0


def test_run_once_history_and_export(initialised: Path) -> None:
    csv_path = write_csv(
        initialised / "accounts.csv",
        [
            row("A-1", days_ago(1)),
            row("A-2", days_ago(45)),
            row("A-3", days_ago(3), dispute="1"),
        ],
    )
    assert run(initialised, "import", "accounts", str(csv_path)).returncode == 0
    result = run(initialised, "run-once", "--now", NOW.isoformat(), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {(d["stage"], d["channel"], d["outcome"]) for d in summary["plan"]["decisions"]} >= {
        ("early", "sms", "queued"),
        ("early", "sms", "held:dispute"),
        ("mid", "letter", "queued"),
        # An hour after the SMS to the same person (US.gap.electronic).
        ("mid", "email", "deferred:cap_email_sms_1h"),
    }
    assert sum(o["count"] for o in summary["send"]["outcomes"] if o["outcome"] == "sent") == 3
    # Files were written by the local sinks.
    assert len(list((initialised / "sink" / "sms").glob("*.txt"))) == 2
    assert len(list((initialised / "sink" / "letter").glob("*.pdf"))) == 1
    # The email goes at its time.
    later = (NOW + timedelta(hours=1)).isoformat()
    assert run(initialised, "send", "--now", later).returncode == 0
    assert len(list((initialised / "sink" / "email").glob("*.eml"))) == 1

    history = json.loads(run(initialised, "history", "A-3", "--json").stdout)
    assert [(m["status"], m["hold_reason"]) for m in history["messages"]] == [("held", "dispute")]
    # The import placed the dispute hold; the planner then held the message under it.
    assert [a["event"] for a in history["audit"]] == ["hold_added", "message_held"]
    assert history["audit"][1]["detail"]["rule_id"] == "hold.dispute"
    assert [(h["reason"], h["source"]) for h in history["holds"]] == [("dispute", "import")]

    exported = run(initialised, "export", "messages", "--format", "jsonl")
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(records) == 5
    assert set(records[0]) == {
        "message_id",
        "account_id",
        "stage",
        "step",
        "channel",
        "recipient",
        "template_id",
        "template_version",
        "scheduled_for",
        "sent_at",
        "status",
        "provider_message_id",
        "body_sha256",
        "hold_reason",
    }
    sent = [r for r in records if r["status"] == "sent"]
    assert all(r["sent_at"] and r["provider_message_id"] and r["body_sha256"] for r in sent)
    held = [r for r in records if r["status"] == "held"]
    assert [r["hold_reason"] for r in held] == ["dispute"]
    email = next(r for r in records if r["channel"] == "email")
    assert (email["status"], email["hold_reason"]) == ("sent", "cap_email_sms_1h")
    assert email["scheduled_for"] == (NOW + timedelta(hours=1)).isoformat()

    csv_out = run(initialised, "export", "messages", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("message_id,account_id,stage")
    parsed = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(parsed) == 5
    letter = next(r for r in parsed if r["channel"] == "letter")
    assert "Jane Doe" in letter["recipient"] and "BOSTON, MA 02110" in letter["recipient"]

    again = json.loads(run(initialised, "run-once", "--now", NOW.isoformat(), "--json").stdout)
    assert again["send"]["outcomes"] == []
    assert all(d["outcome"] != "queued" for d in again["plan"]["decisions"])


def test_history_of_unknown_account(initialised: Path) -> None:
    result = run(initialised, "history", "NOPE")
    assert result.returncode == 2 and "no account 'NOPE'" in result.stderr


def test_demo_runs_the_whole_path(tmp_path: Path) -> None:
    result = run(tmp_path, "demo", "--accounts", "120", "--now", NOW.isoformat())
    assert result.returncode == 0, result.stderr
    for heading in ("1. import", "2. plan", "3. send", "4. what one customer received"):
        assert heading in result.stdout
    assert "2 rejected" in result.stdout
    assert list((tmp_path / "sink" / "sms").glob("*.txt"))
    assert list((tmp_path / "sink" / "letter").glob("*.pdf"))
    # A second run is idempotent: nothing new is sent.
    second = run(tmp_path, "demo", "--accounts", "120", "--now", NOW.isoformat())
    assert second.returncode == 0 and "nothing new was due" in second.stdout


def test_explain_says_why_with_rule_and_source(initialised: Path) -> None:
    csv_path = write_csv(
        initialised / "accounts.csv",
        [row("A-1", days_ago(1)), row("A-3", days_ago(3), dispute="true")],
    )
    assert run(initialised, "import", "accounts", str(csv_path)).returncode == 0
    night = (NOW - timedelta(hours=8)).isoformat()  # 03:00 in New York
    # Before any plan: what the planner would decide now, and why.
    result = run(initialised, "explain", "A-1", "--now", night, "--json")
    assert result.returncode == 0, result.stderr
    story = json.loads(result.stdout)
    assert (story["dpd"], story["stage"], story["packs"]) == (1, "early", ["US-MA", "US"])
    [step] = story["steps"]
    assert (step["outcome"], step["reason"], step["rule_id"]) == (
        "would defer",
        "quiet_hours",
        "US.window.fdcpa",
    )
    assert "FDCPA §805(a)(1)" in step["source"]
    assert step["at"] == (NOW - timedelta(hours=3)).isoformat()  # 08:00 EDT
    held = json.loads(run(initialised, "explain", "A-3", "--now", night, "--json").stdout)
    assert [(s["outcome"], s["rule_id"]) for s in held["steps"]] == [("would hold", "hold.dispute")]
    # After the plan the stored decision is shown, readable for people.
    assert run(initialised, "plan", "--now", night).returncode == 0
    text = run(initialised, "explain", "A-3", "--now", night).stdout
    assert "early/day1 sms (due at DPD 1): held — dispute" in text
    assert "rule hold.dispute: FDCPA §809(b)" in text


def test_simulate_replays_days_on_a_copy_and_leaves_the_database_alone(initialised: Path) -> None:
    csv_path = write_csv(initialised / "accounts.csv", [row("A-1", days_ago(-4))])
    assert run(initialised, "import", "accounts", str(csv_path)).returncode == 0
    result = run(
        initialised,
        "simulate",
        "--from",
        NOW.date().isoformat(),
        "--days",
        "40",
        "--step-hours",
        "4",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    story = json.loads(result.stdout)
    went = [(s["stage"], s["step"], s["channel"]) for s in story["sent"]]
    assert went[0] == ("pre_due", "day3", "sms")
    assert ("early", "day1", "sms") in went and ("mid", "day1", "email") in went
    # The real outbox is untouched: nothing was planned or sent there.
    exported = run(initialised, "export", "messages", "--format", "jsonl").stdout
    assert exported == ""
    text = run(initialised, "simulate", "--from", NOW.date().isoformat(), "--days", "3")
    assert "A-1" in text.stdout and "totals" in text.stdout


def test_hold_add_list_lift_from_the_command_line(initialised: Path) -> None:
    csv_path = write_csv(initialised / "accounts.csv", [row("A-1", days_ago(1))])
    assert run(initialised, "import", "accounts", str(csv_path)).returncode == 0
    bad = run(initialised, "hold", "add", "A-1", "--reason", "vacation", "--note", "x")
    assert bad.returncode == 2 and "--reason 'vacation'" in bad.stderr
    no_note = run(initialised, "hold", "add", "A-1", "--reason", "dispute", "--note", " ")
    assert no_note.returncode == 2 and "evidence" in no_note.stderr
    placed = run(
        initialised,
        "hold",
        "add",
        "A-1",
        "--reason",
        "promise_to_pay",
        "--until",
        "2026-06-20",
        "--note",
        "promised on the phone, call 4411",
        "--now",
        NOW.isoformat(),
    )
    assert placed.returncode == 0, placed.stderr
    assert "hold 1 placed on A-1: promise_to_pay until 2026-06-21" in placed.stdout
    planned = json.loads(run(initialised, "plan", "--now", NOW.isoformat(), "--json").stdout)
    assert {(d["channel"], d["outcome"]) for d in planned["decisions"]} == {
        ("sms", "held:promise_to_pay")
    }
    listed = json.loads(run(initialised, "hold", "list", "A-1", "--json").stdout)
    assert [(h["reason"], h["source"], h["note"]) for h in listed] == [
        ("promise_to_pay", "manual", "promised on the phone, call 4411")
    ]
    assert listed[0]["created_by"].startswith("cli:")
    lifted = run(
        initialised,
        "hold",
        "lift",
        "1",
        "--note",
        "customer cancelled the promise",
        "--now",
        NOW.isoformat(),
    )
    assert lifted.returncode == 0, lifted.stderr
    again = run(initialised, "hold", "lift", "1", "--note", "twice")
    assert again.returncode == 2 and "already lifted" in again.stderr
    history = json.loads(run(initialised, "history", "A-1", "--json").stdout)
    assert history["holds"][0]["lift_note"] == "customer cancelled the promise"
    events = [a["event"] for a in history["audit"]]
    assert "hold_added" in events and "hold_lifted" in events


def test_a_secret_in_the_settings_file_is_refused(tmp_path: Path) -> None:
    config = settings_file(tmp_path, '[smtp]\nhost = "mail.example"\npassword = "hunter2"')
    result = run(tmp_path, "init", config=config)
    assert result.returncode == 2
    assert "smtp.password" in result.stderr and "environment" in result.stderr
    assert "hunter2" not in result.stderr


def test_templates_commands_are_part_of_the_cli(initialised: Path) -> None:
    result = run(initialised, "templates", "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_backup_is_a_working_copy_that_history_reads_after_a_restore(initialised: Path) -> None:
    accounts = write_csv(initialised / "a.csv", [row("B-1", days_ago(1)), row("B-2", days_ago(40))])
    assert run(initialised, "import", "accounts", str(accounts)).returncode == 0
    assert run(initialised, "run-once", "--now", NOW.isoformat()).returncode == 0
    before = run(initialised, "history", "B-2", "--json")
    target = initialised / "backup" / "copy.db"

    done = run(initialised, "backup", str(target))

    assert done.returncode == 0, done.stderr
    assert "at migration" in done.stdout
    again = run(initialised, "backup", str(target))
    assert again.returncode == 2 and "exists already" in again.stderr
    # Restore = point the settings at the copy (or move it into place with serve stopped).
    restored = initialised / "restored"
    restored.mkdir()
    config = settings_file(restored)
    config.write_text(
        config.read_text().replace(str(restored / "db.sqlite"), str(target)), encoding="utf-8"
    )
    after = run(restored, "history", "B-2", "--json", config=config)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert json.loads(after.stdout)["messages"]


def test_run_once_hands_letters_to_the_print_drop_folder(tmp_path: Path) -> None:
    drop = tmp_path / "print-house"
    drop.mkdir()
    config = settings_file(
        tmp_path,
        f'[print_drop]\ndirectory = "{drop}"\nwork_directory = "{tmp_path / "print"}"\n',
    )
    config.write_text(config.read_text().replace("[sinks]\n", '[sinks]\nletter = "print_drop"\n'))
    assert run(tmp_path, "init", config=config).returncode == 0
    csv_path = write_csv(tmp_path / "accounts.csv", [row("A-2", days_ago(45))])
    assert run(tmp_path, "import", "accounts", str(csv_path), config=config).returncode == 0
    result = run(tmp_path, "run-once", "--now", NOW.isoformat(), "--json", config=config)
    assert result.returncode == 0, result.stderr
    outcomes = {
        (o["channel"], o["outcome"]): o["count"]
        for o in json.loads(result.stdout)["send"]["outcomes"]
    }
    assert outcomes[("letter", "handed_to_print")] == 1
    assert not (tmp_path / "sink" / "letter").exists()  # not the file sink
    (manifest,) = drop.glob("*-mid-first_class.csv")
    assert (drop / f"{manifest.name}.sha256").exists()
    exported = run(tmp_path, "export", "messages", "--format", "jsonl", config=config)
    (letter,) = [
        r for r in map(json.loads, exported.stdout.splitlines()) if r["channel"] == "letter"
    ]
    assert letter["status"] == "handed_to_print"
    assert letter["provider_message_id"] == manifest.stem
    history = json.loads(run(tmp_path, "history", "A-2", "--json", config=config).stdout)
    events = [a["event"] for a in history["audit"] if a["message_id"] == letter["message_id"]]
    assert events[-2:] == ["message_staged", "message_handed_to_print"]
