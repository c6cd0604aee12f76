"""Four-eyes approval from the command line, as compliance staff would use it: edit a
template file, register the draft, see that plans keep sending the approved wording, fail
to approve one's own change, have a second person approve it, and see the next plan use
the new wording and record its hash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_csv
from tests.e2e.test_cli import NOW, days_ago
from tests.factory import ROOT
from tests.integration.test_pipeline import row

SMS_FILE = "sms/early_day1.en-US.txt.j2"


def settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'templates_dir = "{tmp_path / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\ndirectory = "{tmp_path / "sink"}"\n',
        encoding="utf-8",
    )
    return path


def run(tmp_path: Path, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHER_CONFIG": str(tmp_path / "settings.toml"), "COLUMNS": "250"}
    env.pop("DISPATCHER_DATABASE_URL", None)
    env.pop("DISPATCHER_USER", None)
    if user is not None:
        env["DISPATCHER_USER"] = user
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def sms_of(tmp_path: Path, account_id: str) -> dict[str, object]:
    history = json.loads(ok(run(tmp_path, "history", account_id, "--json")))
    [sms] = [m for m in history["messages"] if m["channel"] == "sms"]
    return dict(sms)


def exported(tmp_path: Path) -> dict[str, dict[str, object]]:
    lines = ok(run(tmp_path, "export", "messages", "--format", "jsonl")).splitlines()
    return {
        str(r["account_id"]): r
        for r in map(json.loads, lines)
        if r["channel"] == "sms" and r["status"] != "skipped"
    }


def test_an_edited_template_is_sent_only_after_a_second_person_approves_it(
    tmp_path: Path,
) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    settings(tmp_path)
    init = ok(run(tmp_path, "init"))
    assert "from repository front matter: bootstrap" in init
    write_csv(tmp_path / "a.csv", [row("A-1", days_ago(1))])
    ok(run(tmp_path, "import", "accounts", "a.csv", "--now", NOW.isoformat()))

    sms = tmp_path / "templates" / SMS_FILE
    sms.write_text(
        sms.read_text(encoding="utf-8").replace("Hi {{", "Hello {{", 1), encoding="utf-8"
    )
    [listed] = json.loads(
        ok(run(tmp_path, "templates", "versions", "early_day1", "-l", "en-US", "--json"))
    )
    assert listed["on_disk_registered"] is False
    [approved] = listed["versions"]
    assert approved["state"] == "approved" and approved["approved_by"] == "system:bootstrap"

    missing_actor = run(tmp_path, "templates", "sync")
    assert missing_actor.returncode == 2
    assert missing_actor.stderr.strip() == (
        "error: --as NAME (or DISPATCHER_USER) is required: say who you are"
    )
    synced = ok(run(tmp_path, "templates", "sync", "--as", "alice"))
    assert "drafted sms early_day1 en-US @" in synced and "by alice" in synced
    draft_sha = synced.split("@", 1)[1][:12]

    # Plans keep sending the approved wording, and record its hash as the version.
    ok(run(tmp_path, "plan", "--now", NOW.isoformat()))
    first = sms_of(tmp_path, "A-1")
    assert "Hi Jane" in str(first["body"]) and "Hello" not in str(first["body"])
    assert exported(tmp_path)["A-1"]["template_version"] == approved["sha256"]

    diff = ok(run(tmp_path, "templates", "diff", "sms", "early_day1", "--locale", "en-US"))
    assert "-{{ creditor.name }}: Hi {{" in diff and "+{{ creditor.name }}: Hello {{" in diff

    approve = ("templates", "approve", "sms", "early_day1", "--locale", "en-US")
    own = run(tmp_path, *approve, "--sha", draft_sha, "--as", "Alice")
    assert own.returncode == 1
    [line] = own.stderr.strip().splitlines()
    assert line == (
        "error: refused by template.four_eyes: Alice wrote this version and cannot approve "
        "it; a second person must"
    )
    unknown = run(tmp_path, *approve, "--sha", "0000", "--as", "bob")
    assert unknown.returncode == 2
    assert "--sha 0000: no version of sms early_day1 en-US starts with it" in unknown.stderr

    approved_now = ok(run(tmp_path, *approve, "--sha", draft_sha, "--note", "fine", user="bob"))
    assert f"approved sms early_day1 en-US @{draft_sha}" in approved_now
    assert f"retired @{approved['sha256'][:12]}" in approved_now

    write_csv(tmp_path / "b.csv", [row("A-2", days_ago(1))])
    ok(run(tmp_path, "import", "accounts", "b.csv", "--now", NOW.isoformat()))
    later = NOW.replace(hour=16).isoformat()
    ok(run(tmp_path, "plan", "--now", later))
    second = sms_of(tmp_path, "A-2")
    assert "Hello Jane" in str(second["body"])
    records = exported(tmp_path)
    assert str(records["A-2"]["template_version"]).startswith(draft_sha)
    assert records["A-1"]["template_version"] == approved["sha256"]  # already rendered

    [after] = json.loads(
        ok(run(tmp_path, "templates", "versions", "early_day1", "-l", "en-US", "--json"))
    )
    assert [(v["state"], v["author"], v["approved_by"]) for v in after["versions"]] == [
        ("retired", "system:bootstrap", "system:bootstrap"),
        ("approved", "alice", "bob"),
    ]
    history = json.loads(ok(run(tmp_path, "history", "A-2", "--json")))
    [queued] = [
        a
        for a in history["audit"]
        if a["event"] == "message_queued" and a["detail"]["channel"] == "sms"
    ]
    assert queued["detail"]["template_version"].startswith(draft_sha)
    assert queued["detail"]["template_label"] == "1.0.0"


def test_a_draft_with_lint_errors_is_refused_with_the_finding(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    settings(tmp_path)
    ok(run(tmp_path, "init"))
    sms = tmp_path / "templates" / SMS_FILE
    sms.write_text(
        sms.read_text(encoding="utf-8").replace("{{ opt_out }}", "", 1), encoding="utf-8"
    )
    synced = ok(run(tmp_path, "templates", "sync", "--as", "alice"))
    sha = synced.split("@", 1)[1][:12]
    refused = run(
        tmp_path,
        "templates",
        "approve",
        "sms",
        "early_day1",
        "-l",
        "en-US",
        "--sha",
        sha,
        "--as",
        "bob",
    )
    assert refused.returncode == 1
    first, *findings = refused.stderr.strip().splitlines()
    assert first.startswith("error: refused by template.lint_clean: sms early_day1 en-US @")
    assert len(findings) == 1 and "error lint.disclosure.opt_out" in findings[0]
    assert findings[0].startswith(f"{sms}:7: ")
    rejected = ok(
        run(
            tmp_path,
            "templates",
            "reject",
            "sms",
            "early_day1",
            "-l",
            "en-US",
            "--sha",
            sha,
            "--as",
            "bob",
            "--note",
            "the opt-out line is gone",
        )
    )
    assert "rejected sms early_day1 en-US @" in rejected
