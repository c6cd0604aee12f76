"""docs/COMPLIANCE.md maps every rule to the tests that prove it: each test it names must
exist, or the map silently stops proving anything when a test is renamed or removed."""

from __future__ import annotations

import re

from tests.factory import ROOT

REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def named_tests() -> list[tuple[str, str | None]]:
    """(file, test) pairs as the document names them; ``::name`` reuses the last file."""
    found: list[tuple[str, str | None]] = []
    for line in (ROOT / "docs" / "COMPLIANCE.md").read_text(encoding="utf-8").splitlines():
        current: str | None = None
        for match in REFERENCE.finditer(line):
            if match.group(1):
                current, name = match.group(1), match.group(2)
            else:
                name = match.group(3)
            if current is not None:
                found.append((current, name))
    return found


def test_every_test_the_compliance_map_names_exists() -> None:
    named = named_tests()
    missing = []
    for file, name in named:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^(async )?def {name}\b", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert len(named) > 100  # the map is read, not skipped
    assert missing == []
