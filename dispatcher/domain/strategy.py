"""The collection strategy: stages as days-past-due ranges, each with its steps.

Compliance owns this ladder (``config/strategy.toml``); the seeds' handbooks describe it:
1-30 days by SMS, 31-90 by SMS, email and letter, 90+ by formal letters.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from enum import StrEnum
from functools import cached_property
from itertools import pairwise
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ChannelKind(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    LETTER = "letter"


class Step(BaseModel):
    """One message of a stage: on ``day`` of the stage (1 = the stage's first day)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    day: int = Field(ge=1)
    channel: ChannelKind
    template: str

    @field_validator("id", "template")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower_snake_case (a-z, 0-9, _), starting with a letter")
        return value


class Stage(BaseModel):
    """A named DPD range, inclusive at both ends; ``dpd_to`` None means open-ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    dpd_from: int
    dpd_to: int | None = None
    steps: tuple[Step, ...] = ()

    @field_validator("id")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower_snake_case (a-z, 0-9, _), starting with a letter")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.dpd_to is not None and self.dpd_to < self.dpd_from:
            raise ValueError(f"dpd_to {self.dpd_to} is before dpd_from {self.dpd_from}")
        seen: set[tuple[str, ChannelKind]] = set()
        for step in self.steps:
            if (step.id, step.channel) in seen:
                raise ValueError(f"step {step.id!r} on {step.channel} appears twice")
            seen.add((step.id, step.channel))
            if self.dpd_to is not None and self.step_dpd(step) > self.dpd_to:
                raise ValueError(
                    f"step {step.id!r} day {step.day} falls at DPD {self.step_dpd(step)}, "
                    f"after the stage ends at DPD {self.dpd_to}"
                )
        return self

    def contains(self, dpd: int) -> bool:
        return self.dpd_from <= dpd and (self.dpd_to is None or dpd <= self.dpd_to)

    def step_dpd(self, step: Step) -> int:
        """The DPD on which ``step`` becomes due."""
        return self.dpd_from + step.day - 1


class Strategy(BaseModel):
    """The whole ladder; stages must not overlap, so every DPD has at most one stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = "default"
    default_locale: str = "en-US"
    stages: tuple[Stage, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlap(self) -> Self:
        ordered = sorted(self.stages, key=lambda s: s.dpd_from)
        ids = [s.id for s in self.stages]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stage ids repeat: {ids}")
        for before, after in pairwise(ordered):
            if before.dpd_to is None or before.dpd_to >= after.dpd_from:
                raise ValueError(f"stages {before.id!r} and {after.id!r} overlap")
        return self

    @property
    def earliest_dpd(self) -> int:
        return min(s.dpd_from for s in self.stages)

    @cached_property
    def turning_points(self) -> tuple[int, ...]:
        """Every DPD on which what is due can change, sorted: a stage starts, a step falls
        due, or a stage has just ended. Between two of them the ladder asks nothing new."""
        points: set[int] = set()
        for stage in self.stages:
            points.add(stage.dpd_from)
            points.update(stage.step_dpd(step) for step in stage.steps)
            if stage.dpd_to is not None:
                points.add(stage.dpd_to + 1)
        return tuple(sorted(points))

    def next_turning_point(self, dpd: int) -> int | None:
        """The first DPD after ``dpd`` on which what is due can change, if any."""
        points = self.turning_points
        at = bisect_right(points, dpd)
        return points[at] if at < len(points) else None

    def stage_for(self, dpd: int) -> Stage | None:
        for stage in self.stages:
            if stage.contains(dpd):
                return stage
        return None

    def stage(self, stage_id: str) -> Stage | None:
        return next((s for s in self.stages if s.id == stage_id), None)

    def ladder_position(self, stage_id: str, step_id: str) -> int | None:
        """The DPD at which a step falls due: orders messages as the ladder runs."""
        stage = self.stage(stage_id)
        step = next((s for s in stage.steps if s.id == step_id), None) if stage else None
        return stage.step_dpd(step) if stage and step else None
