"""HELP replies per policy pack (config/policies/*.toml ``[help]``): inherited along the
pack chain, placeholders checked when the pack is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dispatcher.error import ConfigError
from dispatcher.policy_book import PolicyBook
from tests.factory import ROOT

BOOK = PolicyBook.load(ROOT / "config" / "policies")
VALUES = {
    "creditor_name": "Acme",
    "creditor_phone": "+1 800 555 0100",
    "creditor_website": "https://acme.example",
    "opt_out": "Reply STOP to opt out.",
}


@pytest.mark.parametrize(
    ("jurisdiction", "rule_id"),
    [
        ("US", "US.sms.help"),
        ("US-MA", "US.sms.help"),  # inherited from the parent pack
        ("US-WA", "US.sms.help"),
        ("UK", "UK.sms.help"),
        ("CN", "CN.sms.help"),
        ("default", "default.sms.help"),
        ("XX", "default.sms.help"),  # no pack of its own
    ],
)
def test_every_jurisdiction_has_a_help_reply_with_a_source(jurisdiction: str, rule_id: str) -> None:
    found = BOOK.help_for(jurisdiction)
    assert found is not None and found.id == rule_id
    assert BOOK.rule_source(rule_id) == found.source
    text = found.render(VALUES)
    assert text.startswith("Acme") and "+1 800 555 0100" in text
    assert "$" not in text


def test_english_help_replies_say_how_to_opt_out() -> None:
    for jurisdiction in ("US", "UK", "default"):
        found = BOOK.help_for(jurisdiction)
        assert found is not None and "Reply STOP to opt out." in found.render(VALUES)


def test_an_unknown_placeholder_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    packs = tmp_path / "policies"
    shutil.copytree(ROOT / "config" / "policies", packs)
    uk = packs / "UK.toml"
    uk.write_text(
        uk.read_text(encoding="utf-8").replace("$creditor_phone", "$account_balance"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        PolicyBook.load(packs)
    assert "UK.toml" in str(caught.value) and "help.text" in str(caught.value)
    assert "account_balance" in str(caught.value)
