"""The synthetic portfolio: deterministic, realistic, and valid under the CSV contract."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from dispatcher.account_file import COLUMNS, FLAG_COLUMNS, Parsed, read_accounts
from dispatcher.portfolio import generate_portfolio, write_portfolio

TODAY = date(2026, 5, 1)
COUNT = 4000


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], Path]:
    path = tmp_path_factory.mktemp("portfolio") / "accounts.csv"
    write_portfolio(path, COUNT, today=TODAY)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, path


@pytest.fixture(scope="module")
def parsed(portfolio: tuple[list[dict[str, str]], Path]) -> list[Parsed]:
    _, path = portfolio
    results = list(read_accounts(path, default_timezone="America/New_York", default_region="US"))
    rejected = [r for r in results if not isinstance(r, Parsed)]
    assert rejected == []
    return [r for r in results if isinstance(r, Parsed)]


def test_deterministic_for_a_seed() -> None:
    first = list(generate_portfolio(300, today=TODAY, seed=11))
    assert list(generate_portfolio(300, today=TODAY, seed=11)) == first
    assert list(generate_portfolio(300, today=TODAY, seed=12)) != first
    assert list(generate_portfolio(100, today=TODAY, seed=11)) == first[:100]


def test_file_has_every_contract_column(portfolio: tuple[list[dict[str, str]], Path]) -> None:
    rows, path = portfolio
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
    assert len(rows) == COUNT
    assert rows == list(generate_portfolio(COUNT, today=TODAY))
    assert not list(path.parent.glob(".*partial"))


def test_every_generated_row_parses(parsed: list[Parsed]) -> None:
    assert len(parsed) == COUNT
    assert len({p.values["account_id"] for p in parsed}) == COUNT


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rows_parse_for_other_seeds(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "accounts.csv"
    write_portfolio(path, 1500, today=TODAY, seed=seed)
    results = list(read_accounts(path, default_timezone="UTC"))
    assert all(isinstance(r, Parsed) for r in results), [
        r for r in results if not isinstance(r, Parsed)
    ][:3]


def test_days_past_due_span_pre_due_to_past_180(parsed: list[Parsed]) -> None:
    dpd = [(TODAY - p.values["due_date"]).days for p in parsed]  # type: ignore[operator]
    assert min(dpd) == -7
    assert max(dpd) == 250
    bands = Counter(
        "pre_due"
        if d < 0
        else "early"
        if d <= 30
        else "mid"
        if d <= 90
        else "late"
        if d <= 180
        else "pre_legal"
        for d in dpd
    )
    assert set(bands) == {"pre_due", "early", "mid", "late", "pre_legal"}
    assert bands["early"] > bands["mid"] > bands["late"]
    assert bands["pre_legal"] > 0.05 * COUNT


def test_country_mix(parsed: list[Parsed]) -> None:
    countries = Counter(p.values["country"] for p in parsed)
    share = {c: n / COUNT for c, n in countries.items()}
    assert 0.55 < share["US"] < 0.65
    assert 0.21 < share["CN"] < 0.29
    assert 0.07 < share["GB"] < 0.13
    assert {"DE", "FR", "CA"} <= set(countries)
    currencies = {(p.values["country"], p.values["currency"]) for p in parsed}
    assert ("CN", "CNY") in currencies
    assert ("GB", "GBP") in currencies
    assert ("US", "USD") in currencies


def test_derived_values_cover_every_policy_pack_and_zone_source(parsed: list[Parsed]) -> None:
    packs = Counter(p.values["jurisdiction"] for p in parsed)
    assert {"US", "US-MA", "US-WA", "UK", "CN", "default"} <= set(packs)
    sources = Counter(p.values["timezone_source"] for p in parsed)
    assert {"explicit", "phone", "country", "country_ambiguous"} <= set(sources)
    locales = Counter(p.values["locale"] for p in parsed)
    assert {"en-US", "zh-CN", "en-GB"} <= set(locales)
    assert {p.values["locale"] for p in parsed if p.values["country"] == "CN"} == {"zh-CN"}
    cn_phones = [p.values["phone"] for p in parsed if p.values["country"] == "CN"]
    assert all(phone is None or str(phone).startswith("+861") for phone in cn_phones)


def test_flags_statuses_and_missing_contact_data(parsed: list[Parsed]) -> None:
    for flag in FLAG_COLUMNS:
        share = sum(bool(p.values[flag]) for p in parsed) / COUNT
        assert 0.003 < share < 0.04, flag
    statuses = Counter(p.values["status"] for p in parsed)
    assert 0.01 < (statuses["paid"] + statuses["closed"]) / COUNT < 0.06
    promises = [
        p.values["promise_to_pay_until"] for p in parsed if p.values["promise_to_pay_until"]
    ]
    assert promises
    assert all(d > TODAY for d in promises)  # type: ignore[operator]
    assert any(p.values["email"] is None for p in parsed)
    assert any(p.values["phone"] is None for p in parsed)
    assert any(p.values["address_line1"] is None for p in parsed)
