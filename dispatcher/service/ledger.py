"""The contacts of a batch's persons, kept current while the batch queues or sends.

Caps count per person: every account that shares a phone number or an email address.
The ledger starts from what the store holds and grows with each message the batch
queues (planner) or hands over (sender), so two accounts of one person in the same
batch, or two messages of one account, see each other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from dispatcher.domain.account import Account
from dispatcher.domain.cap import Contact
from dispatcher.domain.strategy import ChannelKind
from dispatcher.store.sql import ContactRow


class ContactLedger:
    def __init__(self, rows: Iterable[ContactRow] = ()) -> None:
        self._contacts: dict[str, Contact] = {}
        self._index: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        for row in rows:
            self._add(row.message_id, row.account_id, row.phone, row.email, row.channel, row.at)

    def add(self, message_id: str, account: Account, channel: ChannelKind, at: datetime) -> None:
        self._add(message_id, account.account_id, account.phone, account.email, channel, at)

    def of(self, account: Account, *, excluding: str | None = None) -> list[Contact]:
        """The person's contacts: this account's, and those of accounts sharing its phone
        or email; ``excluding`` leaves out the message being decided."""
        ids = set(self._index[("account", account.account_id)])
        if account.phone:
            ids |= self._index[("phone", account.phone)]
        if account.email:
            ids |= self._index[("email", account.email)]
        ids.discard(excluding or "")
        return [self._contacts[i] for i in ids]

    def _add(
        self,
        message_id: str,
        account_id: str,
        phone: str | None,
        email: str | None,
        channel: ChannelKind,
        at: datetime,
    ) -> None:
        self._contacts[message_id] = Contact(at, channel, account_id)
        self._index[("account", account_id)].add(message_id)
        if phone:
            self._index[("phone", phone)].add(message_id)
        if email:
            self._index[("email", email)].add(message_id)
