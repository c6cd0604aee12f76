"""Shared fixtures: a real SQLite file per test, wired through the real bootstrap."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from dispatcher.account_file import COLUMNS
from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.settings import Settings, SinkSettings
from tests.factory import ROOT

# Property tests: CI runs a fixed, derandomised profile so a red build is reproducible;
# HYPOTHESIS_PROFILE=long runs many more examples by hand.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def write_csv(path: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row))
    return path


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'dispatcher.db'}",
        templates_dir=ROOT / "templates",
        strategy_file=ROOT / "config" / "strategy.toml",
        policies_dir=ROOT / "config" / "policies",
        sinks=SinkSettings(directory=tmp_path / "sink"),
    )


@pytest.fixture
def channels() -> dict[ChannelKind, MemoryChannel]:
    return {kind: MemoryChannel() for kind in ChannelKind}


@pytest.fixture
def app(tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]) -> App:
    wired = bootstrap(settings_for(tmp_path), channels=channels)
    wired.store.create_schema()
    return wired
