"""Rules RETENTION.period, RETENTION.purge and RETENTION.legal_hold on real databases:
personal data goes once an account has been idle past its retention period, never while
it is collected or under a legal hold; digests stay and the audit chain still verifies."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.bootstrap import App
from dispatcher.domain.audit_chain import PURGED
from dispatcher.domain.retention import RecordKind
from dispatcher.error import InputError
from dispatcher.service import audit_log, retention
from dispatcher.store.retention import PURGED_TEXT
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

THREE_YEARS = timedelta(days=1096)


def paid_after_a_campaign(app: App, tmp_path: Path, account_id: str = "R-1") -> datetime:
    """An account reminded (SMS, email, a letter), given a hold, then paid; returns the
    time of its last activity: its last message or audit record (Reg F 1006.100 counts
    from the last communication or attempt, not from the payment)."""
    load(app, tmp_path, [row(account_id, days_ago(100))])
    app.planner().plan(NOW)
    asyncio.run(app.sender().send(NOW))
    app.store.add_hold(
        account_id,
        "dispute",
        channel=None,
        scope="account",
        starts_at=NOW,
        ends_at=None,
        note="customer Jane Doe called from +16175550123",
        actor="collector:ann",
        now=NOW,
    )
    paid_at = NOW + timedelta(days=2)
    load(app, tmp_path, [row(account_id, days_ago(100), status="paid")], "paid.csv", paid_at)
    app.planner().plan(paid_at)  # ends what was still waiting
    return max(
        *(m["updated_at"] for m in app.store.messages_of(account_id)),
        *(a["at"] for a in app.store.audit_of(account_id)),
    )


def purge(app: App, at: datetime, dry_run: bool = False) -> retention.PurgeReport:
    return retention.purge(
        app.retention, app.audit_chain, app.retention_policy, at, dry_run=dry_run
    )


def test_nothing_goes_before_the_period_and_everything_personal_after_it(
    app: App, tmp_path: Path
) -> None:
    last = paid_after_a_campaign(app, tmp_path)
    sent = [m for m in messages(app, account_id="R-1") if m["body"]]
    assert sent, "the campaign sent something"

    early = purge(app, last + THREE_YEARS - timedelta(days=1))
    assert all(done.accounts == 0 for done in early.kinds.values())

    report = purge(app, last + THREE_YEARS + timedelta(days=1))

    assert {k: d.accounts for k, d in report.kinds.items()} == dict.fromkeys(RecordKind, 1)
    account = app.store.account("R-1")
    assert account is not None and account.full_name == PURGED_TEXT
    assert account.phone is None and account.email is None and account.address is None
    after = {m["message_id"]: m for m in messages(app, account_id="R-1")}
    for before in sent:
        kept = after[before["message_id"]]
        assert kept["body"] is None and kept["recipient"] is None and kept["subject"] is None
        assert kept["body_sha256"] == before["body_sha256"]  # what was sent stays provable
        assert kept["status"] == before["status"]
    audit = app.store.audit_of("R-1")
    assert all(a["detail"] == PURGED for a in audit if a["event"] != "account_purged")
    assert [a for a in audit if a["event"] == "account_purged"]
    assert all(h["note"] == PURGED_TEXT for h in app.store.holds_of("R-1"))
    found = audit_log.check(app.audit_chain, audit_log.AnchorFile(tmp_path / "anchors.jsonl"))
    assert found.verdict.intact and found.unsealed == 0
    # Once is enough: a second run finds nothing, and its own records restart no clock.
    again = purge(app, last + THREE_YEARS + timedelta(days=2))
    assert all(done.accounts == 0 for done in again.kinds.values())


def test_an_open_debt_is_never_purged_however_idle(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("R-2", days_ago(100))])
    app.planner().plan(NOW)

    report = purge(app, NOW + 10 * THREE_YEARS)

    assert all(done.accounts == 0 for done in report.kinds.values())
    account = app.store.account("R-2")
    assert account is not None and account.full_name == "Jane Doe"


def test_a_legal_hold_blocks_the_purge_until_released(app: App, tmp_path: Path) -> None:
    last = paid_after_a_campaign(app, tmp_path)
    later = last + THREE_YEARS + timedelta(days=1)
    app.retention.set_legal_hold(
        "R-1", on=True, note="subpoena 2029-117", actor="cli:counsel", now=later
    )
    with pytest.raises(InputError, match="already under a legal hold"):
        app.retention.set_legal_hold("R-1", on=True, note="again", actor="cli:x", now=later)

    held = purge(app, later)

    assert all(done.accounts == 0 for done in held.kinds.values())
    account = app.store.account("R-1")
    assert account is not None and account.full_name == "Jane Doe"
    # Releasing is not collection activity: the account is purged on the next run.
    app.retention.set_legal_hold(
        "R-1", on=False, note="case closed", actor="cli:counsel", now=later
    )
    released = purge(app, later + timedelta(days=1))
    assert released.kinds[RecordKind.PERSONAL_DATA].accounts == 1
    events = [a["event"] for a in app.store.audit_of("R-1")]
    assert "legal_hold_placed" in events and "legal_hold_released" in events


def test_a_dry_run_counts_and_changes_nothing(app: App, tmp_path: Path) -> None:
    last = paid_after_a_campaign(app, tmp_path)
    before = messages(app, account_id="R-1")

    report = purge(app, last + THREE_YEARS + timedelta(days=1), dry_run=True)

    assert report.kinds[RecordKind.PERSONAL_DATA].accounts == 1
    assert messages(app, account_id="R-1") == before
    account = app.store.account("R-1")
    assert account is not None and account.full_name == "Jane Doe"


def test_letter_files_of_purged_accounts_are_removed(app: App, tmp_path: Path) -> None:
    last = paid_after_a_campaign(app, tmp_path)
    letters = [Path(str(m["artifact_path"])) for m in messages(app) if m["artifact_path"]]
    for path in letters:  # the in-memory channel writes none: stand in for the file sink
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%PDF-1.7")

    report = purge(app, last + THREE_YEARS + timedelta(days=1))

    assert report.files_removed == len(letters)
    assert not any(path.exists() for path in letters)


def test_when_message_content_was_purged_stays_known_after_the_audit_details_go(
    app: App, tmp_path: Path
) -> None:
    """The collector's letter page says "purged under retention on ..." from this: the
    purge's own records keep their detail when every other detail is purged."""
    last = paid_after_a_campaign(app, tmp_path)
    assert app.retention.purges_of("R-1", RecordKind.MESSAGE_CONTENT) == []
    at = last + THREE_YEARS + timedelta(days=1)
    report = purge(app, at)
    assert report.kinds[RecordKind.AUDIT_DETAIL].audit_records > 0  # details did go
    assert app.retention.purges_of("R-1", RecordKind.MESSAGE_CONTENT) == [at]
    assert app.retention.purges_of("R-1", RecordKind.PERSONAL_DATA) == [at]
    assert app.retention.purges_of("NOPE", RecordKind.MESSAGE_CONTENT) == []
    purge(app, at + timedelta(days=1))  # nothing left to purge: no second record
    assert app.retention.purges_of("R-1", RecordKind.MESSAGE_CONTENT) == [at]
