"""When a message may go: the account's policy-pack chain, its candidate zones, holidays
and the person's recent and queued contacts (frequency caps)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatcher.domain.account import Account
from dispatcher.domain.cap import Contact
from dispatcher.domain.schedule import schedule
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import HolidayLookup, Place, Verdict, window_end
from dispatcher.policy_book import PolicyBook
from dispatcher.zone import candidate_zones


@dataclass(frozen=True)
class ContactTiming:
    """Asked by the planner when it queues and by the sender just before it delivers."""

    book: PolicyBook
    is_holiday: HolidayLookup

    @property
    def lookback(self) -> timedelta:
        """How far back contacts can matter: the longest cap window of any pack."""
        return self.book.longest_cap_window()

    def verdict(
        self,
        account: Account,
        channel: ChannelKind,
        now: datetime,
        contacts: Sequence[Contact] = (),
    ) -> Verdict:
        place = Place(candidate_zones(account), account.country, account.region)
        chain = self.book.chain(account.jurisdiction)
        return schedule(now, place, channel, account.account_id, chain, self.is_holiday, contacts)

    def window_end(self, account: Account, channel: ChannelKind, now: datetime) -> datetime | None:
        """When the contact window open at ``now`` closes for ``account`` (the earliest
        close over its candidate zones and pack chain); None if closed now or no close
        within the look-ahead. The sender's "no late arrival" limit for SMS."""
        place = Place(candidate_zones(account), account.country, account.region)
        chain = self.book.chain(account.jurisdiction)
        return window_end(now, place, channel, chain, self.is_holiday)
