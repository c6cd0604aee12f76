"""`messages retry` and `export audit` / `export messages --until` from the command line."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, update

from dispatcher.service.export import AUDIT_EXPORT_FIELDS
from dispatcher.store.sql import MESSAGE
from tests.conftest import write_csv
from tests.e2e.test_cli import NOW, days_ago, initialised, run  # noqa: F401 (fixture)
from tests.integration.test_pipeline import row


def test_a_failed_message_is_retried_and_the_audit_exported_by_range(initialised: Path) -> None:  # noqa: F811
    accounts = write_csv(initialised / "a.csv", [row("A-1", days_ago(1))])
    assert run(initialised, "import", "accounts", str(accounts)).returncode == 0
    assert run(initialised, "plan", "--now", NOW.isoformat()).returncode == 0
    # The provider refused it for good (as the sender records it).
    engine = create_engine(f"sqlite:///{initialised / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(update(MESSAGE).values(status="failed", last_error="30007: blocked"))
    [message_id] = [
        m["message_id"]
        for m in map(json.loads, run(initialised, "export", "messages").stdout.splitlines())
    ]
    engine.dispose()

    later = (NOW + timedelta(hours=1)).isoformat()
    retried = run(
        initialised, "messages", "retry", message_id, "--note", "carrier fixed", "--now", later
    )
    assert retried.returncode == 0, retried.stderr
    assert "queued again" in retried.stdout
    again = run(initialised, "messages", "retry", message_id, "--note", "twice", "--now", later)
    assert again.returncode == 2 and "is queued, not failed" in again.stderr
    assert run(initialised, "send", "--now", later).returncode == 0
    [exported] = map(json.loads, run(initialised, "export", "messages").stdout.splitlines())
    assert exported["status"] == "sent"

    # The audit export of the hour of the retry holds the retry and the send, nothing older.
    window = ["--since", later, "--until", (NOW + timedelta(hours=2)).isoformat()]
    records = [
        json.loads(line)
        for line in run(initialised, "export", "audit", *window).stdout.splitlines()
    ]
    assert [r["event"] for r in records] == ["message_requeued", "message_sent"]
    assert (
        records[0]["actor"].startswith("cli:") and records[0]["detail"]["note"] == "carrier fixed"
    )
    table = list(
        csv.reader(
            io.StringIO(run(initialised, "export", "audit", "--format", "csv", *window).stdout)
        )
    )
    assert table[0] == list(AUDIT_EXPORT_FIELDS) and len(table) == 3
    # Messages changed before the retry: none (it moved on since).
    before = run(initialised, "export", "messages", "--until", later).stdout
    assert before == ""
