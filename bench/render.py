"""``python -m bench render``: SMS and email messages rendered per second on one core.

What the planner does per message once its templates are compiled (at start-up, cached
for the process): build the fixed context from the account (babel money and dates
included) and run the sandboxed templates (SMS body; email subject, text and HTML).
Every message gets a different account (id, name, balance, due date), so no cache can
hand back a finished message; contexts are built inside the timed loop as in a plan.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from dispatcher.domain.account import Account
from dispatcher.domain.staging import days_past_due
from dispatcher.domain.strategy import ChannelKind
from dispatcher.template import TemplateSet
from dispatcher.template.context import build_context
from dispatcher.template.sample import SAMPLE_CREDITOR, sample_account

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
# (channel, template, stage) of the default strategy: one SMS and one email per stage.
CASES = (
    (ChannelKind.SMS, "early_day1", "early"),
    (ChannelKind.EMAIL, "mid_day1", "mid"),
)
NAMES = ("Margaret Thompson-Whitfield", "José Álvarez", "李小龍", "Zoë O'Brien", "Nguyễn Văn An")


def _accounts(locale: str, count: int) -> list[Account]:
    base = sample_account(locale)
    return [
        replace(
            base,
            account_id=f"NW-{i:08d}",
            full_name=NAMES[i % len(NAMES)],
            balance=Decimal(1000 + i % 9000) + Decimal(i % 100) / 100,
            due_date=(NOW - timedelta(days=1 + i % 60)).date(),
        )
        for i in range(count)
    ]


def _rate(
    templates: TemplateSet, channel: ChannelKind, name: str, stage: str, accounts: list[Account]
) -> float:
    start = time.process_time()  # one core's work, whatever else the machine does
    for account in accounts:
        context = build_context(
            account,
            dpd=days_past_due(account.due_date, account.timezone, NOW),
            stage_id=stage,
            creditor=SAMPLE_CREDITOR,
            now=NOW,
        )
        templates.render(channel, name, account.locale, context)
    return len(accounts) / (time.process_time() - start)


def render(count: int, repeat: int) -> None:
    templates = TemplateSet.load(ROOT / "templates")
    for locale in ("en-US", "zh-CN"):
        accounts = _accounts(locale, count)
        for channel, name, stage in CASES:
            _rate(templates, channel, name, stage, accounts[:200])  # warm-up
            rates = [_rate(templates, channel, name, stage, accounts) for _ in range(repeat)]
            print(
                f"render {channel.value} {name}.{locale}, {count:,} messages: messages/s per "
                f"CPU second min {min(rates):,.0f} / median {statistics.median(rates):,.0f} "
                f"/ max {max(rates):,.0f}"
            )
