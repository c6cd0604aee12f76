"""build_context: the fixed variable set, computed from the account without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from dispatcher.domain.account import Account, PostalAddress
from dispatcher.template import VARIABLES, Creditor, build_context, first_name
from dispatcher.template.sample import SAMPLE_CREDITOR

ACCOUNT = Account(
    account_id="A 1/2",
    full_name="  Jane   Q. Doe ",
    balance=Decimal("250.00"),
    currency="USD",
    due_date=date(2026, 3, 1),
    timezone="Asia/Shanghai",
    locale="en-US",
    jurisdiction="US",
    address=PostalAddress("1 Elm St", None, "Boston", "MA", "02110", "US"),
)


def context(account: Account = ACCOUNT, dpd: int = 5, **kw: object) -> dict[str, object]:
    now = kw.pop("now", datetime(2026, 3, 5, 20, 0, tzinfo=UTC))
    assert isinstance(now, datetime)
    return build_context(account, dpd=dpd, stage_id="early", creditor=SAMPLE_CREDITOR, now=now)


def test_context_has_exactly_the_documented_variables() -> None:
    assert set(context()) == VARIABLES


def test_context_values() -> None:
    c = context()
    assert c["account_id"] == "A 1/2"
    assert c["customer_name"] == "Jane Q. Doe"
    assert c["first_name"] == "Jane"
    assert c["balance"] == Decimal("250.00")
    assert c["currency"] == "USD"
    assert c["due_date"] == date(2026, 3, 1)
    assert c["stage"] == "early"
    assert c["creditor"] is SAMPLE_CREDITOR
    assert c["payment_link"] == "https://pay.northwind.example/a/A%201%2F2"
    assert c["unsubscribe_link"] == "https://northwind.example/unsubscribe/A%201%2F2"
    assert c["opt_out"] == "Reply STOP to opt out."
    # In the order the US post reads it (Google's i18n address data).
    assert c["address_lines"] == ["1 Elm St", "BOSTON, MA 02110", "US"]
    assert c["locale"] == "en-US"


def test_today_is_the_date_in_the_account_time_zone() -> None:
    # 20:00 UTC on 5 March is already 6 March in Shanghai.
    assert context()["today"] == date(2026, 3, 6)
    new_york = replace(ACCOUNT, timezone="America/New_York")
    assert context(new_york)["today"] == date(2026, 3, 5)


@pytest.mark.parametrize(
    ("dpd", "overdue", "until"), [(-3, 0, 3), (0, 0, 0), (1, 1, 0), (181, 181, 0)]
)
def test_days_overdue_and_until_due(dpd: int, overdue: int, until: int) -> None:
    c = context(dpd=dpd)
    assert (c["dpd"], c["days_overdue"], c["days_until_due"]) == (dpd, overdue, until)


def test_no_address_gives_no_lines_and_chinese_opt_out() -> None:
    c = context(replace(ACCOUNT, address=None, locale="zh-CN"))
    assert c["address_lines"] == []
    assert c["opt_out"] == "回复STOP退订"


@pytest.mark.parametrize(
    ("full", "first"),
    [
        ("Jane Doe", "Jane"),
        ("Doe, Jane", "Jane"),
        ("Dr. Jane Doe", "Jane"),
        ("Mr John Smith", "John"),
        ("王小明", "王小明"),
        ("  Ana  ", "Ana"),
        ("", ""),
    ],
)
def test_first_name_is_best_effort(full: str, first: str) -> None:
    assert first_name(full) == first


def test_creditor_patterns_are_checked() -> None:
    with pytest.raises(ValueError, match="payment_url"):
        replace(SAMPLE_CREDITOR, payment_url="https://pay/{account}")
    with pytest.raises(ValueError, match="opt_out_email_url"):
        replace(SAMPLE_CREDITOR, opt_out_email_url="https://x/{0}")
    creditor = Creditor(
        name="C",
        phone="1",
        email="c@example.com",
        website="c.example",
        address_lines=(),
        payment_url="https://c.example/pay",
        opt_out_email_url="https://c.example/u/{account_id}",
        opt_out_sms="Text STOP to end.",
        opt_out_sms_by_locale=(),
    )
    assert creditor.opt_out_sms_for("zh-CN") == "Text STOP to end."
    assert SAMPLE_CREDITOR.opt_out_sms_for("zh-Hans-CN") == "回复STOP退订"
    assert SAMPLE_CREDITOR.opt_out_sms_for("zh_CN") == "回复STOP退订"
    assert SAMPLE_CREDITOR.opt_out_sms_for("zh-TW") == "Reply STOP to opt out."


@pytest.mark.parametrize(
    ("address", "lines"),
    [
        (
            ("1428 Elm Street", "Apt 3B", "Springfield", "MA", "01105", "US"),
            ["1428 Elm Street", "Apt 3B", "SPRINGFIELD, MA 01105", "US"],
        ),
        (
            ("Hauptstr. 5", None, "Berlin", None, "10115", "DE"),
            ["Hauptstr. 5", "10115 BERLIN", "DE"],
        ),
        (
            ("10 Downing St", None, "London", None, "SW1A 1AA", "GB"),
            ["10 Downing St", "LONDON", "SW1A 1AA", "GB"],
        ),
        (
            ("建国路88号", None, "北京市", "北京市", "100020", "CN"),
            ["100020", "北京市", "建国路88号", "CN"],
        ),
        # Canada Post's format is upper case, street included: the street is printed,
        # never the placeholder the format is filled with (once "\x00STREET\x00").
        (
            ("12 Main St", "Apt 4", "Montreal", "QC", "H2Y 1C6", "CA"),
            ["12 MAIN ST", "APT 4", "MONTREAL QC H2Y 1C6", "CA"],
        ),
        # Not a country code the address data knows: the plain order, nothing lost.
        (("1 Main", None, "Paris", None, "75001", "France"), ["1 Main", "75001 Paris", "France"]),
        (("1 Main", None, None, None, "75001", "FR"), ["1 Main", "75001", "FR"]),
    ],
)
def test_address_lines_follow_the_destination_post(
    address: tuple[str, str | None, str | None, str | None, str | None, str], lines: list[str]
) -> None:
    assert PostalAddress(*address).lines() == lines
