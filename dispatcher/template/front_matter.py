"""Template front matter: the TOML header between ``+++`` lines that compliance fills in.

::

    +++
    id = "early_day1"
    version = "1.0.0"
    channel = "sms"
    locale = "en-US"
    description = "Early stage, day 1: first overdue reminder."
    disclosures = ["creditor_identity", "opt_out"]
    approval = "approved"
    +++
    {{ creditor.name }}: ...

The email text part also carries ``subject``, itself a Jinja string.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import TemplateError

FENCE: Final = "+++"
REQUIRED_KEYS: Final = frozenset(
    {"id", "version", "channel", "locale", "description", "disclosures", "approval"}
)
OPTIONAL_KEYS: Final = frozenset({"subject"})
_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_TOML_LINE: Final = re.compile(r"\(at line (\d+), column (\d+)\)")


class Approval(StrEnum):
    """The four-eyes state of a template version."""

    APPROVED = "approved"
    DRAFT = "draft"


@dataclass(frozen=True, slots=True)
class FrontMatter:
    """The validated header of one template file."""

    id: str
    version: str
    channel: ChannelKind
    locale: str
    description: str
    disclosures: tuple[str, ...]
    approval: Approval
    subject: str | None = None


def split_front_matter(text: str, file: str) -> tuple[FrontMatter, str]:
    """Parse and validate the front matter; return it and the Jinja source.

    The returned source has the front matter replaced by a Jinja comment spanning the
    same lines, so line numbers in Jinja errors still match the file. Why a comment
    and not blank lines: with ``trim_blocks`` (on in every template environment) the
    newline after the comment goes too, so no blank line leaks into the output.
    """
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != FENCE:
        raise TemplateError(f"{file}:1: must start with front matter: a line '{FENCE}'")
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == FENCE), None)
    if close is None:
        raise TemplateError(f"{file}:1: front matter has no closing '{FENCE}' line")
    header = "\n".join(lines[1:close])
    try:
        data = tomllib.loads(header)
    except tomllib.TOMLDecodeError as exc:
        message = _TOML_LINE.sub(
            lambda m: f"(at line {int(m.group(1)) + 1}, column {m.group(2)})", str(exc)
        )
        raise TemplateError(f"{file}: front matter is not valid TOML: {message}") from exc
    front = _validate(data, file)
    body = "{#" + "\n" * close + "#}" + "\n".join(["", *lines[close + 1 :]])
    return front, body


def _validate(data: dict[str, object], file: str) -> FrontMatter:
    keys = set(data)
    missing = sorted(REQUIRED_KEYS - keys)
    if missing:
        raise TemplateError(f"{file}: front matter lacks {', '.join(missing)}")
    unknown = sorted(keys - REQUIRED_KEYS - OPTIONAL_KEYS)
    if unknown:
        raise TemplateError(f"{file}: front matter has unknown keys {', '.join(unknown)}")

    def text(key: str) -> str:
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise TemplateError(f"{file}: front matter {key} must be a non-empty string")
        return value

    ident = text("id")
    if not _NAME.match(ident):
        raise TemplateError(f"{file}: front matter id {ident!r} must be lower_snake_case")
    try:
        channel = ChannelKind(text("channel"))
    except ValueError:
        choices = ", ".join(c.value for c in ChannelKind)
        raise TemplateError(
            f"{file}: front matter channel {data['channel']!r} is not one of {choices}"
        ) from None
    try:
        approval = Approval(text("approval"))
    except ValueError:
        raise TemplateError(
            f"{file}: front matter approval {data['approval']!r} must be approved or draft"
        ) from None
    disclosures = data["disclosures"]
    if not isinstance(disclosures, list) or not all(
        isinstance(d, str) and _NAME.match(d) for d in disclosures
    ):
        raise TemplateError(
            f"{file}: front matter disclosures must be a list of lower_snake_case names"
        )
    if len(set(disclosures)) != len(disclosures):
        raise TemplateError(f"{file}: front matter disclosures repeat a name")
    subject = text("subject") if "subject" in data else None
    return FrontMatter(
        id=ident,
        version=text("version"),
        channel=channel,
        locale=text("locale"),
        description=text("description"),
        disclosures=tuple(disclosures),
        approval=approval,
        subject=subject,
    )
