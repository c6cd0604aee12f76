"""Any sequence of edits, syncs, approvals, rejections and retirements by any people keeps
the approval rules (house rule HR-12), checked on the real catalog (SQLite) after each step:
at most one approved version per template, never approved by its author, final states
stay final, every approval audited, and what a plan sends is the approved version."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.template_version import VersionState, same_person
from dispatcher.error import InputError
from dispatcher.service.template_catalog import ApprovalRefused
from dispatcher.store.sql import AUDIT
from dispatcher.store.template_version import TEMPLATE_VERSION
from tests.conftest import settings_for
from tests.factory import ROOT

KEY = (ChannelKind.SMS, "early_day1", "en-US")
PEOPLE = ("ann", "Ann ", "bob")  # "Ann " is ann: four eyes ignore case and spaces
FINAL = (VersionState.RETIRED, VersionState.REJECTED)
START = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 4), st.sampled_from(PEOPLE)),
        st.tuples(st.just("approve"), st.integers(0, 2), st.sampled_from(PEOPLE)),
        st.tuples(st.just("reject"), st.integers(0, 2), st.sampled_from(PEOPLE)),
        st.tuples(st.just("retire"), st.integers(0, 2), st.sampled_from(PEOPLE)),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[App, Path, str]]:
    """One migrated SQLite database and a copy of the templates, reset by each example."""
    directory = tmp_path_factory.mktemp("approval")
    templates = directory / "templates"
    shutil.copytree(ROOT / "templates", templates)
    sms = templates / "sms" / "early_day1.en-US.txt.j2"
    app = bootstrap(
        settings_for(directory).model_copy(update={"templates_dir": templates}),
        channels={k: MemoryChannel() for k in ChannelKind},
    )
    app.store.create_schema()
    yield app, sms, sms.read_text(encoding="utf-8")
    app.store.engine.dispose()


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_no_sequence_of_actions_breaks_the_approval_rules(
    world: tuple[App, Path, str], steps: list[tuple[str, int, str]]
) -> None:
    app, sms, original = world
    sms.write_text(original, encoding="utf-8")
    with app.store.engine.begin() as conn:
        conn.execute(delete(TEMPLATE_VERSION))
        conn.execute(delete(AUDIT))
    catalog = app.catalog
    catalog.bootstrap(START)
    seen: dict[int, VersionState] = {}
    now = START
    for action, n, person in steps:
        now += timedelta(minutes=1)
        versions = catalog.versions.versions(*KEY)
        target = versions[-1 - n % len(versions)]  # newest first: mostly the fresh draft
        try:
            if action == "edit":
                sms.write_text(original.replace("Hi {{", "Hi" + "!" * n + " {{"), encoding="utf-8")
                catalog.sync(now, person)
            elif action == "approve":
                catalog.approve(KEY, target.sha256, approver=person, now=now)
                assert not same_person(person, target.author)
            elif action == "reject":
                catalog.reject(KEY, target.sha256, who=person, note="no", now=now)
            else:
                catalog.retire(KEY, target.sha256, who=person, note="stop", now=now)
        except (ApprovalRefused, InputError):
            pass
        _check(app, seen)


def _check(app: App, seen: dict[int, VersionState]) -> None:
    versions = app.catalog.versions.versions(*KEY)
    approved = [v for v in versions if v.state is VersionState.APPROVED]
    assert len(approved) <= 1
    for v in versions:
        if seen.get(v.id) in FINAL:
            assert v.state is seen[v.id], "a retired or rejected version changed state"
        if v.state is VersionState.DRAFT:
            assert seen.get(v.id, VersionState.DRAFT) is VersionState.DRAFT
        seen[v.id] = v.state
        if v.approved_by is not None:
            assert v.approved_at is not None
            if not v.approved_by.startswith("system:"):
                assert not same_person(v.approved_by, v.author)
        if v.state is VersionState.REJECTED:
            assert v.rejected_by and v.note and v.approved_by is None
        if v.state is VersionState.RETIRED:
            assert v.retired_at is not None and v.approved_by is not None
    with app.store.engine.connect() as conn:
        details = [
            json.loads(d)
            for d in conn.execute(
                select(AUDIT.c.detail).where(AUDIT.c.event == "template_version_approved")
            ).scalars()
        ]
    audited = sorted(
        d["sha256"]
        for d in details
        if (d["channel"], d["template_id"], d["locale"]) == (KEY[0].value, KEY[1], KEY[2])
    )
    assert audited == sorted(v.sha256 for v in versions if v.approved_by is not None)
    sent = app.planner(START).templates
    if approved:
        assert sent.info(*KEY).sha256 == approved[0].sha256
    else:
        assert not sent.has(*KEY)
