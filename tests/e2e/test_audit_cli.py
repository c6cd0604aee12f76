"""`dispatcher audit seal` and `audit verify` as an auditor runs them: intact after a real
run, then the database edited behind the program's back, and the newest records deleted."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

from tests.conftest import write_csv
from tests.e2e.test_cli import NOW, days_ago, initialised, run
from tests.integration.test_pipeline import row

__all__ = ["initialised"]


def test_verify_passes_after_a_run_then_names_the_record_edited_in_sql(initialised: Path) -> None:
    accounts = write_csv(
        initialised / "a.csv", [row(f"V-{i}", days_ago(1 + 20 * i)) for i in range(5)]
    )
    assert run(initialised, "import", "accounts", str(accounts)).returncode == 0
    assert run(initialised, "run-once", "--now", NOW.isoformat()).returncode == 0

    before = run(initialised, "audit", "verify")
    sealed = run(initialised, "audit", "seal")
    intact = run(initialised, "audit", "verify", "--json")

    assert before.returncode == 0 and "not sealed yet" in before.stdout
    assert sealed.returncode == 0 and "anchor written to" in sealed.stdout
    report = json.loads(intact.stdout)
    assert report["intact"] and report["unsealed"] == 0 and report["anchors"] == 1
    assert report["sealed"] > 10
    with sqlite3.connect(initialised / "db.sqlite") as db:
        [(victim,)] = db.execute("SELECT id FROM audit WHERE seq = 5").fetchall()
        db.execute("UPDATE audit SET actor = 'user:someone' WHERE id = ?", (victim,))

    broken = run(initialised, "audit", "verify")

    assert broken.returncode == 1
    assert f"record {victim} (seq 5) was changed after it was sealed" in broken.stderr


def test_verify_catches_the_newest_records_deleted_through_the_anchor(initialised: Path) -> None:
    accounts = write_csv(initialised / "a.csv", [row("W-1", days_ago(3)), row("W-2", days_ago(45))])
    assert run(initialised, "import", "accounts", str(accounts)).returncode == 0
    assert run(initialised, "run-once", "--now", NOW.isoformat()).returncode == 0
    assert run(initialised, "audit", "seal").returncode == 0
    with sqlite3.connect(initialised / "db.sqlite") as db:
        [(top,)] = db.execute("SELECT max(seq) FROM audit").fetchall()
        db.execute("DELETE FROM audit WHERE seq > ?", (top - 2,))

    broken = run(initialised, "audit", "verify", "--json")

    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["broken"] == "truncated" and report["at_seq"] == top - 1


def test_retention_purge_respects_a_legal_hold_from_the_command_line(initialised: Path) -> None:
    accounts = write_csv(initialised / "a.csv", [row("P-1", days_ago(3)), row("P-2", days_ago(3))])
    assert run(initialised, "import", "accounts", str(accounts)).returncode == 0
    assert run(initialised, "run-once", "--now", NOW.isoformat()).returncode == 0
    paid = write_csv(
        initialised / "paid.csv",
        [row("P-1", days_ago(3), status="paid"), row("P-2", days_ago(3), status="paid")],
    )
    assert run(initialised, "import", "accounts", str(paid)).returncode == 0
    held = run(initialised, "retention", "hold", "P-2", "--note", "litigation 2026-88")
    assert held.returncode == 0, held.stderr
    later = (NOW + timedelta(days=4 * 365)).isoformat()

    dry = run(initialised, "retention", "purge", "--now", later, "--dry-run", "--json")
    done = run(initialised, "retention", "purge", "--now", later, "--json")

    assert json.loads(dry.stdout)["kinds"]["personal_data"]["accounts"] == 1
    assert json.loads(done.stdout)["kinds"]["personal_data"]["accounts"] == 1
    purged = json.loads(run(initialised, "history", "P-1", "--json").stdout)
    kept = json.loads(run(initialised, "history", "P-2", "--json").stdout)
    assert all(m["body"] is None for m in purged["messages"])
    assert any(m["body"] for m in kept["messages"])
    assert run(initialised, "audit", "verify").returncode == 0
    twice = run(initialised, "retention", "hold", "P-2", "--note", "again")
    assert twice.returncode == 2 and "already under a legal hold" in twice.stderr
