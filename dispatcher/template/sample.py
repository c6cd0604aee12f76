"""Sample data for previews and tests: a realistic account per locale and a creditor.

Why in the package: ``dispatcher templates preview`` and the tests render every template
with the same believable data, so a template that is too long or reads badly with a
real name shows up before it reaches a customer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Final

from dispatcher.domain.account import Account, PostalAddress
from dispatcher.domain.staging import days_past_due
from dispatcher.template.context import Creditor, build_context

SAMPLE_CREDITOR: Final = Creditor(
    name="Northwind Lending",
    phone="+1 800 555 0199",
    email="collections@northwind.example",
    website="northwind.example",
    address_lines=("200 Harbor Street, Suite 400", "Boston, MA 02110", "United States"),
    payment_url="https://pay.northwind.example/a/{account_id}",
    opt_out_email_url="https://northwind.example/unsubscribe/{account_id}",
)

_ACCOUNTS: Final[dict[str, Account]] = {
    "en-US": Account(
        account_id="NW-20240117-0042",
        full_name="Margaret Thompson-Whitfield",
        balance=Decimal("12345.67"),
        currency="USD",
        due_date=date(2025, 3, 1),
        timezone="America/New_York",
        locale="en-US",
        jurisdiction="US",
        phone="+16175550123",
        email="margaret.tw@example.com",
        address=PostalAddress(
            line1="1428 Elm Street, Apt 3B",
            line2=None,
            city="Springfield",
            region="MA",
            postal_code="01105",
            country="US",
        ),
        country="US",
    ),
    "zh-CN": Account(
        account_id="NW-20240117-0043",
        full_name="欧阳明华",
        balance=Decimal("12345.67"),
        currency="CNY",
        due_date=date(2025, 3, 1),
        timezone="Asia/Shanghai",
        locale="zh-CN",
        jurisdiction="CN",
        phone="+8613812345678",
        email="ouyang.minghua@example.cn",
        address=PostalAddress(
            line1="上海市浦东新区世纪大道100号",
            line2="环球金融中心32楼3201室",
            city=None,
            region=None,
            postal_code="200120",
            country="CN",
        ),
        country="CN",
    ),
}

SAMPLE_LOCALES: Final = tuple(_ACCOUNTS)


def sample_account(locale: str) -> Account:
    """A realistic account for ``locale`` (en-US or zh-CN; others get en-US data)."""
    account = _ACCOUNTS.get(locale, _ACCOUNTS["en-US"])
    if account.locale != locale:
        account = replace(account, locale=locale)
    return account


def sample_context(
    locale: str, *, dpd: int = 7, stage_id: str = "early", creditor: Creditor = SAMPLE_CREDITOR
) -> dict[str, object]:
    """The context :func:`build_context` gives the sample account at ``dpd`` days past due."""
    account = sample_account(locale)
    now = datetime.combine(account.due_date + timedelta(days=dpd), datetime.min.time(), UTC)
    now += timedelta(hours=12)
    actual = days_past_due(account.due_date, account.timezone, now)
    return build_context(account, dpd=actual, stage_id=stage_id, creditor=creditor, now=now)
