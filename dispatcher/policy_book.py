"""Policy packs from ``config/policies/*.toml``: validated at start-up, stacked by parent.

A pack is one jurisdiction's timing rules (contact windows per channel and weekday,
holiday calendars), each rule with an id and its source. ``US-MA`` names ``US`` as its
parent: an account in Massachusetts must satisfy both, so the strictest rule wins.
An account whose jurisdiction has no pack gets the ``default`` pack.
"""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from string import Template
from typing import Self

import holidays
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dispatcher.domain.cap import Cap, CapScope
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import WEEKDAYS, HolidayRule, Pack, Window
from dispatcher.error import ConfigError
from dispatcher.settings import first_error, read_toml

DEFAULT_PACK = "default"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(min_length=3)
    channels: tuple[ChannelKind, ...] = tuple(ChannelKind)


class WindowFile(_Rule):
    days: tuple[str, ...] = WEEKDAYS
    start: time
    end: time

    @field_validator("days")
    @classmethod
    def _days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [d for d in value if d not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown day(s) {unknown}; use {', '.join(WEEKDAYS)}")
        return value

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self


class HolidayFile(_Rule):
    calendar: str

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: str) -> str:
        if value != "account" and value not in holidays.list_supported_countries():
            raise ValueError(f"{value!r} is not a country the holidays package knows")
        return value


class CapFile(_Rule):
    limit: int = Field(ge=1)
    days: float | None = Field(default=None, gt=0)
    hours: float | None = Field(default=None, gt=0)
    scope: CapScope = CapScope.PERSON

    @model_validator(mode="after")
    def _one_span(self) -> Self:
        if (self.days is None) == (self.hours is None):
            raise ValueError("give the rolling window as either days or hours")
        return self

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.days) if self.days else timedelta(hours=self.hours or 0)


class HelpFile(BaseModel):
    """The reply to an inbound HELP or INFO: who we are, how to reach us, how to stop.

    ``text`` may name ``$creditor_name``, ``$creditor_phone``, ``$creditor_website`` and
    ``$opt_out`` (the creditor's opt-out line); nothing else is filled in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str = Field(min_length=3)
    text: str = Field(min_length=1, max_length=640)

    @field_validator("text")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            Template(value).substitute(dict.fromkeys(HELP_FIELDS, ""))
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"unknown or broken placeholder {exc}; use ${', $'.join(HELP_FIELDS)}"
            ) from None
        return value

    def render(self, values: dict[str, str]) -> str:
        return Template(self.text).substitute({k: values.get(k, "") for k in HELP_FIELDS})


HELP_FIELDS = ("creditor_name", "creditor_phone", "creditor_website", "opt_out")


class PackFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    parent: str | None = None
    description: str
    windows: tuple[WindowFile, ...] = ()
    holidays: tuple[HolidayFile, ...] = ()
    caps: tuple[CapFile, ...] = ()
    # Most SMS segments one message may take; None: dispatcher.sms.DEFAULT_MAX_SMS_SEGMENTS.
    max_sms_segments: int | None = Field(default=None, ge=1)
    # The reply to HELP/INFO (inherited from the parent pack when not given).
    help: HelpFile | None = None

    def rules(self) -> tuple[_Rule | HelpFile, ...]:
        """Every rule of the pack that carries an id and a source."""
        return (*self.windows, *self.holidays, *self.caps, *((self.help,) if self.help else ()))

    def pack(self) -> Pack:
        return Pack(
            id=self.id,
            description=self.description,
            windows=tuple(
                Window(
                    w.id,
                    w.source,
                    frozenset(w.channels),
                    frozenset(WEEKDAYS.index(d) for d in w.days),
                    w.start,
                    w.end,
                )
                for w in self.windows
            ),
            holidays=tuple(
                HolidayRule(h.id, h.source, h.calendar, frozenset(h.channels))
                for h in self.holidays
            ),
            caps=tuple(
                Cap(c.id, c.source, frozenset(c.channels), c.limit, c.window, c.scope)
                for c in self.caps
            ),
        )


class PolicyBook:
    """Every loaded pack, and the chain of packs that applies to a jurisdiction."""

    def __init__(self, files: dict[str, PackFile]) -> None:
        self.files = files
        self._chains: dict[str, tuple[Pack, ...]] = {}
        packs = {pack_id: f.pack() for pack_id, f in files.items()}
        for pack_id in files:
            chain: list[Pack] = []
            current: str | None = pack_id
            while current is not None:
                chain.append(packs[current])
                current = files[current].parent
            self._chains[pack_id] = tuple(chain)

    def chain(self, jurisdiction: str) -> tuple[Pack, ...]:
        """The packs an account of ``jurisdiction`` must satisfy, most specific first."""
        return self._chains.get(jurisdiction) or self._chains[DEFAULT_PACK]

    def help_for(self, jurisdiction: str) -> HelpFile | None:
        """The HELP reply for an account of ``jurisdiction``: its pack's, else the nearest
        parent's, else the default pack's."""
        current: str | None = jurisdiction if jurisdiction in self.files else DEFAULT_PACK
        while current is not None:
            found = self.files[current].help
            if found is not None:
                return found
            current = self.files[current].parent
        return self.files[DEFAULT_PACK].help

    def longest_cap_window(self) -> timedelta:
        return max((c.window for f in self.files.values() for c in f.caps), default=timedelta())

    def rule_source(self, rule_id: str) -> str | None:
        for f in self.files.values():
            for rule in f.rules():
                if rule.id == rule_id:
                    return rule.source
        return None

    @classmethod
    def load(cls, directory: Path) -> PolicyBook:
        """Load every ``*.toml`` pack; errors name the file and the key."""
        files: dict[str, PackFile] = {}
        paths = sorted(directory.glob("*.toml")) if directory.is_dir() else []
        if not paths:
            raise ConfigError(str(directory), "", "no policy packs (*.toml) found")
        for path in paths:
            try:
                parsed = PackFile.model_validate(read_toml(path))
            except ValidationError as exc:
                raise first_error(path, exc) from None
            if parsed.id != path.stem:
                raise ConfigError(str(path), "id", f"{parsed.id!r} must match the file name")
            files[parsed.id] = parsed
        if DEFAULT_PACK not in files:
            raise ConfigError(str(directory), "", f"the {DEFAULT_PACK!r} pack is missing")
        for pack_id, parsed in files.items():
            seen = {pack_id}
            parent = parsed.parent
            while parent is not None:
                if parent not in files:
                    raise ConfigError(
                        str(directory / f"{pack_id}.toml"), "parent", f"no pack {parent!r}"
                    )
                if parent in seen:
                    raise ConfigError(
                        str(directory / f"{pack_id}.toml"),
                        "parent",
                        f"packs form a cycle through {parent!r}",
                    )
                seen.add(parent)
                parent = files[parent].parent
        ids = [r.id for f in files.values() for r in f.rules()]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ConfigError(str(directory), "id", f"rule ids repeat: {duplicated}")
        return cls(files)
