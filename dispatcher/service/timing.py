"""When a message may go: the account's policy-pack chain, its candidate zones, holidays
and the person's recent and queued contacts (frequency caps)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dispatcher.domain.account import Account
from dispatcher.domain.cap import Contact
from dispatcher.domain.schedule import schedule
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import HolidayLookup, Pack, Place, Verdict, check, window_end
from dispatcher.policy_book import PolicyBook
from dispatcher.zone import candidate_zones


@dataclass(frozen=True)
class ContactTiming:
    """Asked by the planner when it queues and by the sender just before it delivers."""

    book: PolicyBook
    is_holiday: HolidayLookup
    # check()'s answers by (instant, place, channel, pack chain): a first plan asks the same
    # few hundred questions for every account. Exact, since the rules are pure and this
    # object's book and holidays never change (a reload builds a new ContactTiming).
    _checks: dict[tuple[datetime, Place, ChannelKind, int], Verdict] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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
        return schedule(
            now,
            place,
            channel,
            account.account_id,
            chain,
            self.is_holiday,
            contacts,
            check_window=self._check,
        )

    def _check(
        self,
        at: datetime,
        place: Place,
        channel: ChannelKind,
        chain: Sequence[Pack],
        is_holiday: HolidayLookup,
    ) -> Verdict:
        # id(chain): the book keeps each chain (a tuple) for its lifetime, so ids are stable.
        key = (at, place, channel, id(chain))
        found = self._checks.get(key)
        if found is None:
            if len(self._checks) >= 20_000:  # bounded: the instants asked about move on
                self._checks.clear()
            found = self._checks[key] = check(at, place, channel, chain, is_holiday)
        return found

    def window_end(self, account: Account, channel: ChannelKind, now: datetime) -> datetime | None:
        """When the contact window open at ``now`` closes for ``account`` (the earliest
        close over its candidate zones and pack chain); None if closed now or no close
        within the look-ahead. The sender's "no late arrival" limit for SMS."""
        place = Place(candidate_zones(account), account.country, account.region)
        chain = self.book.chain(account.jurisdiction)
        return window_end(now, place, channel, chain, self.is_holiday)
