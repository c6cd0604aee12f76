"""Builders for test data: one place that knows how to make a valid account."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from dispatcher.domain.account import Account, PostalAddress
from dispatcher.domain.strategy import Strategy
from dispatcher.settings import load_strategy

ROOT = Path(__file__).resolve().parent.parent


def account(**changes: Any) -> Account:
    base = Account(
        account_id="A-1",
        full_name="Jane Doe",
        balance=Decimal("250.00"),
        currency="USD",
        due_date=date(2026, 3, 1),
        timezone="America/New_York",
        locale="en-US",
        jurisdiction="US",
        phone="+16175550123",
        email="jane@example.com",
        address=PostalAddress("1 Elm St", None, "Boston", "MA", "02110", "US"),
        country="US",
    )
    return replace(base, **changes)


def shipped_strategy() -> Strategy:
    return load_strategy(ROOT / "config" / "strategy.toml")


def strategy(stages: list[dict[str, Any]]) -> Strategy:
    return Strategy.model_validate({"stages": stages})
