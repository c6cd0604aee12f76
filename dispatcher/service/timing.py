"""When a message may go: the account's policy-pack chain, its candidate zones, holidays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dispatcher.domain.account import Account
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import HolidayLookup, Place, Verdict, check
from dispatcher.policy_book import PolicyBook
from dispatcher.zone import candidate_zones


@dataclass(frozen=True)
class ContactTiming:
    """Asked by the planner when it queues and by the sender just before it delivers."""

    book: PolicyBook
    is_holiday: HolidayLookup

    def verdict(self, account: Account, channel: ChannelKind, now: datetime) -> Verdict:
        place = Place(candidate_zones(account), account.country, account.region)
        return check(now, place, channel, self.book.chain(account.jurisdiction), self.is_holiday)
