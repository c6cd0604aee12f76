"""Template versions and four-eyes approval on a real database (SQLite and PostgreSQL):
the catalog, the planner sending only approved wording, and the audit trail."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState
from dispatcher.error import InputError, TemplateError
from dispatcher.service.template_catalog import (
    BOOTSTRAP_ACTOR,
    BOOTSTRAP_NOTE,
    ApprovalRefused,
    compile_versions,
)
from dispatcher.store.sql import AUDIT
from dispatcher.store.template_version import TEMPLATE_VERSION, StateChanged
from dispatcher.template import TemplateSet
from dispatcher.template.sample import sample_context
from tests.conftest import settings_for
from tests.factory import ROOT
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

SMS = (ChannelKind.SMS, "early_day1", "en-US")
EMAIL = (ChannelKind.EMAIL, "mid_day1", "en-US")


@pytest.fixture
def own(app: App, tmp_path: Path) -> tuple[App, Path]:
    """The test's app on the same (bootstrapped) database, reading a copy of the shipped
    templates that the test edits like a compliance officer would."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    settings = app.settings.model_copy(update={"templates_dir": templates})
    wired = bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind})
    yield wired, templates
    wired.store.engine.dispose()


def edit(templates: Path, relative: str, old: str, new: str) -> None:
    path = templates / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def events(app: App, prefix: str = "template_version_") -> list[tuple[str, str, dict[str, object]]]:
    with app.store.engine.connect() as conn:
        rows = conn.execute(
            select(AUDIT.c.event, AUDIT.c.actor, AUDIT.c.detail)
            .where(AUDIT.c.event.startswith(prefix))
            .order_by(AUDIT.c.id)
        ).all()
    return [(e, a, json.loads(d)) for e, a, d in rows]


def test_bootstrap_approves_what_front_matter_approved_once(app: App) -> None:
    shipped = TemplateSet.load(ROOT / "templates")
    versions = app.catalog.versions.versions()
    assert {(v.key, v.sha256) for v in versions} == {
        (key, shipped.info(*key).sha256) for key in shipped.names()
    }
    for v in versions:
        assert v.state is VersionState.APPROVED
        assert (v.author, v.approved_by) == (BOOTSTRAP_ACTOR, BOOTSTRAP_ACTOR)
        assert v.note == BOOTSTRAP_NOTE
    bootstrapped = events(app)
    assert len(bootstrapped) == len(versions)
    assert {(e, a) for e, a, _d in bootstrapped} == {("template_version_approved", BOOTSTRAP_ACTOR)}
    # The catalog is no longer empty: front matter approves nothing any more.
    assert app.catalog.bootstrap(NOW) == []
    assert len(app.catalog.versions.versions()) == len(versions)


def test_front_matter_drafts_are_not_bootstrapped_and_later_approved_front_matter_is_a_draft(
    tmp_path: Path, database_url: str
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    edit(templates, "sms/early_day7.en-US.txt.j2", 'approval = "approved"', 'approval = "draft"')
    settings = settings_for(tmp_path, database_url).model_copy(update={"templates_dir": templates})
    app = bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind})
    app.store.create_schema()
    app.catalog.bootstrap(NOW)
    assert app.catalog.versions.versions(ChannelKind.SMS, "early_day7", "en-US") == []
    # Saying "approved" in front matter after the bootstrap makes only a draft.
    edit(templates, "sms/early_day7.en-US.txt.j2", 'approval = "draft"', 'approval = "approved"')
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    app = bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind})
    report = app.catalog.sync(NOW, "ann")
    assert sorted(v.template_id for v in report.drafted) == ["early_day1", "early_day7"]
    assert {v.state for v in report.drafted} == {VersionState.DRAFT}
    app.store.engine.dispose()


def test_sync_registers_a_changed_file_as_a_draft_once_and_audits_it(own: tuple[App, Path]) -> None:
    app, templates = own
    assert app.catalog.sync(NOW, "ann").drafted == []  # nothing changed yet
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    assert (draft.key, draft.state, draft.author, draft.label) == (
        SMS,
        VersionState.DRAFT,
        "ann",
        "1.0.0",
    )
    assert draft.sha256 == app.templates.info(*SMS).sha256
    assert draft.source == (templates / "sms/early_day1.en-US.txt.j2").read_text(encoding="utf-8")
    assert app.catalog.sync(NOW, "bob").drafted == []
    [(event, actor, detail)] = events(app, "template_version_drafted")
    assert (event, actor, detail["sha256"], detail["template_id"]) == (
        "template_version_drafted",
        "ann",
        draft.sha256,
        "early_day1",
    )
    with pytest.raises(InputError, match="--as"):
        app.catalog.sync(NOW, "system:planner")


def test_a_changed_file_changes_nothing_sent_until_a_second_person_approves(
    own: tuple[App, Path],
) -> None:
    app, templates = own
    approved_before = app.catalog.versions.approved_hashes()
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    load(app, app.settings.sinks.directory.parent, [row("A-1", days_ago(1))])

    app.planner(NOW).plan(NOW)
    [first] = messages(app, channel="sms")
    assert "Hi Jane" in str(first["body"]) and "Hello" not in str(first["body"])
    old_sha = dict(approved_before)[SMS]
    assert first["template_version"] == first["template_sha256"] == old_sha

    with pytest.raises(ApprovalRefused, match=r"template\.four_eyes: ann wrote this version"):
        app.catalog.approve(SMS, draft.sha256[:6], approver="ann", now=NOW)
    with pytest.raises(ApprovalRefused, match="four_eyes"):
        app.catalog.approve(SMS, draft.sha256[:6], approver="ANN", now=NOW)
    assert app.catalog.versions.approved_hashes() == approved_before

    later = NOW + timedelta(minutes=5)
    done = app.catalog.approve(SMS, draft.sha256[:6], approver="bob", now=later, note="ok")
    assert done.approved.state is VersionState.APPROVED
    assert (done.approved.approved_by, done.approved.approved_at) == ("bob", later)
    assert done.retired is not None and done.retired.sha256 == old_sha
    [old] = [v for v in app.catalog.versions.versions(*SMS) if v.sha256 == old_sha]
    assert (old.state, old.retired_by, old.retired_at) == (VersionState.RETIRED, "bob", later)
    approved_events = events(app, "template_version_approved")[-1]
    assert approved_events[1] == "bob"
    assert approved_events[2]["replaces"] == old_sha and approved_events[2]["author"] == "ann"
    assert events(app, "template_version_retired")[-1][2]["replaced_by"] == draft.sha256

    load(app, app.settings.sinks.directory.parent, [row("A-2", days_ago(1))], name="b.csv")
    app.planner(later).plan(later)
    [second] = [m for m in messages(app, channel="sms") if m["account_id"] == "A-2"]
    assert "Hello Jane" in str(second["body"])
    assert second["template_version"] == second["template_sha256"] == draft.sha256
    # What was queued before keeps the wording approved when it was rendered.
    [again] = [m for m in messages(app, channel="sms") if m["account_id"] == "A-1"]
    assert again["body"] == first["body"]


def test_the_planner_renders_the_approved_source_not_the_file(own: tuple[App, Path]) -> None:
    """Even with no sync at all, and the file broken beyond loading, approved wording goes."""
    app, templates = own
    (templates / "sms/early_day1.en-US.txt.j2").write_text("not a template", encoding="utf-8")
    with pytest.raises(TemplateError):
        _ = app.templates
    load(app, app.settings.sinks.directory.parent, [row("A-1", days_ago(1))])
    report = app.planner(NOW).plan(NOW)
    assert report.counts[("early", "sms", "queued")] == 1
    [queued] = messages(app, channel="sms")
    assert "Hi Jane" in str(queued["body"])


def test_a_template_without_an_approved_version_is_held_never_sent_as_a_draft(
    own: tuple[App, Path],
) -> None:
    app, templates = own
    [approved] = [v for v in app.catalog.versions.versions(*SMS)]
    app.catalog.retire(SMS, approved.sha256[:8], who="carol", note="wrong fee quoted", now=NOW)
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    load(app, app.settings.sinks.directory.parent, [row("A-1", days_ago(1))])

    report = app.planner(NOW).plan(NOW)
    assert report.counts[("early", "sms", "held:template_not_approved")] == 1
    [held] = messages(app, channel="sms")
    assert (held["status"], held["hold_reason"], held["rule_id"]) == (
        "held",
        "template_not_approved",
        "hold.template_not_approved",
    )
    assert held["body"] is None
    assert events(app, "template_version_retired")[-1][1] == "carol"

    app.catalog.approve(SMS, draft.sha256[:8], approver="bob", now=NOW)
    later = NOW + timedelta(minutes=15)
    app.planner(later).plan(later)
    [released] = messages(app, channel="sms")
    assert released["status"] == "queued" and "Hello Jane" in str(released["body"])
    assert released["template_version"] == draft.sha256


def test_a_version_with_lint_errors_cannot_be_approved(own: tuple[App, Path]) -> None:
    app, templates = own
    edit(templates, "sms/early_day1.en-US.txt.j2", "{{ opt_out }}", "")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    with pytest.raises(ApprovalRefused, match=r"template\.lint_clean") as refused:
        app.catalog.approve(SMS, draft.sha256, approver="bob", now=NOW)
    assert [f.rule for f in refused.value.findings] == ["lint.disclosure.opt_out"]
    assert refused.value.findings[0].file.endswith("sms/early_day1.en-US.txt.j2")
    assert refused.value.findings[0].line == 7  # the disclosures line of the version itself
    assert app.catalog.find(SMS, draft.sha256).state is VersionState.DRAFT


def test_retired_and_rejected_versions_are_final(own: tuple[App, Path]) -> None:
    app, templates = own
    [original] = app.catalog.versions.versions(*SMS)
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [first] = app.catalog.sync(NOW, "ann").drafted
    app.catalog.approve(SMS, first.sha256, approver="bob", now=NOW)
    with pytest.raises(ApprovalRefused, match="a retired version cannot be approved"):
        app.catalog.approve(SMS, original.sha256, approver="bob", now=NOW)
    with pytest.raises(ApprovalRefused, match="an approved version cannot be approved"):
        app.catalog.approve(SMS, first.sha256, approver="carol", now=NOW)

    edit(templates, "sms/early_day1.en-US.txt.j2", "Hello {{", "Dear {{")
    [second] = app.catalog.sync(NOW, "ann").drafted
    with pytest.raises(InputError, match="--note"):
        app.catalog.reject(SMS, second.sha256, who="bob", note=" ", now=NOW)
    rejected = app.catalog.reject(SMS, second.sha256, who="bob", note="too formal", now=NOW)
    assert (rejected.state, rejected.rejected_by, rejected.note) == (
        VersionState.REJECTED,
        "bob",
        "too formal",
    )
    with pytest.raises(ApprovalRefused, match="a rejected version cannot be approved"):
        app.catalog.approve(SMS, second.sha256, approver="carol", now=NOW)
    assert events(app, "template_version_rejected")[-1][2]["note"] == "too formal"
    # Putting the rejected wording back on disk registers nothing new: it is still rejected.
    assert app.catalog.sync(NOW, "ann").drafted == []


def test_a_stale_approval_writes_nothing(own: tuple[App, Path]) -> None:
    """Two people acting on one draft at once: the second finds it changed."""
    app, templates = own
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    app.catalog.reject(SMS, draft.sha256, who="carol", note="no", now=NOW)
    approved_before = app.catalog.versions.approved_hashes()
    with pytest.raises(StateChanged, match="no longer draft"):
        app.catalog.versions.approve(draft, approver="bob", note=None, now=NOW, audit=lambda _r: [])
    assert app.catalog.versions.approved_hashes() == approved_before


def test_the_database_allows_one_approved_version_per_template(own: tuple[App, Path]) -> None:
    app, templates = own
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    [draft] = app.catalog.sync(NOW, "ann").drafted
    with pytest.raises(IntegrityError), app.store.engine.begin() as conn:
        conn.execute(
            update(TEMPLATE_VERSION)
            .where(TEMPLATE_VERSION.c.id == draft.id)
            .values(state=VersionState.APPROVED.value)
        )


def test_a_stored_source_changed_outside_dispatcher_is_never_sent(own: tuple[App, Path]) -> None:
    app, _templates = own
    [approved] = app.catalog.versions.versions(*SMS)
    with app.store.engine.begin() as conn:
        conn.execute(
            update(TEMPLATE_VERSION)
            .where(TEMPLATE_VERSION.c.id == approved.id)
            .values(source=approved.source.replace("Hi {{", "Pay now {{"))
        )
    with pytest.raises(TemplateError, match="does not match its hash"):
        app.planner(NOW)


def test_an_email_version_keeps_both_parts_and_renders_like_the_files(app: App) -> None:
    [version] = app.catalog.versions.versions(*EMAIL)
    assert version.source_html is not None and "<" in version.source_html
    from_catalog = compile_versions(app.settings.templates_dir, [version])
    context = sample_context("en-US", dpd=31, stage_id="mid")
    assert from_catalog.render(*EMAIL, context) == app.templates.render(*EMAIL, context)


def test_diff_shows_the_change_against_the_approved_version(own: tuple[App, Path]) -> None:
    app, templates = own
    edit(templates, "sms/early_day1.en-US.txt.j2", "Hi {{", "Hello {{")
    on_disk = app.catalog.diff(SMS)
    assert "(on disk)" in on_disk.target
    [draft] = app.catalog.sync(NOW, "ann").drafted
    found = app.catalog.diff(SMS)
    assert found.base is not None and found.base.state is VersionState.APPROVED
    assert found.target == f"@{draft.sha256[:12]} (draft)"
    changed = [line for line in found.lines if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) == 2
    assert changed[0].startswith("-{{ creditor.name }}: Hi {{")
    assert changed[1].startswith("+{{ creditor.name }}: Hello {{")
    assert found.lines[0].startswith("--- ") and "(approved)" in found.lines[0]
    with pytest.raises(InputError, match="at least 4 hex digits"):
        app.catalog.diff(SMS, "xyz")
