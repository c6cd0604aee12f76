"""One account's history: its messages in ladder order, its holds and its audit trail.

What ``dispatcher history`` prints and the collector's account page shows, gathered one
way for both.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import RowMapping

from dispatcher.domain.account import Account
from dispatcher.domain.strategy import Strategy
from dispatcher.error import InputError
from dispatcher.store.sql import SqlStore


@dataclass(frozen=True)
class History:
    account: Account
    messages: list[RowMapping]  # by cycle, then ladder position, then creation
    holds: list[RowMapping]  # oldest first, active and lifted
    audit: list[RowMapping]  # oldest first
    by_message: dict[str, list[RowMapping]] = field(default_factory=dict)

    def detail(self, record: RowMapping) -> dict[str, Any]:
        """An audit record's detail as data (purged details read as empty)."""
        try:
            value = json.loads(record["detail"] or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def account_history(store: SqlStore, strategy: Strategy, account_id: str) -> History:
    """Everything recorded about ``account_id``; an unknown id is an InputError."""
    account = store.account(account_id)
    if account is None:
        raise InputError(f"no account {account_id!r}")
    ladder = strategy.ladder_position
    messages = sorted(
        store.messages_of(account_id),
        key=lambda m: (m["cycle"], ladder(m["stage"], m["step"]) or 0, m["created_at"]),
    )
    audit = store.audit_of(account_id)
    by_message: dict[str, list[RowMapping]] = defaultdict(list)
    for record in audit:
        if record["message_id"]:
            by_message[record["message_id"]].append(record)
    return History(account, messages, store.holds_of(account_id), audit, dict(by_message))
