"""Reading and validating the accounts CSV (DESIGN.md, "Accounts CSV").

The contract: a header row, UTF-8, required columns ``account_id, full_name, balance,
currency, due_date``, the optional columns listed in :data:`OPTIONAL_COLUMNS`. Bad rows
never abort the file and never vanish: :func:`read_accounts` yields a :class:`Rejected`
with the line number and a reason for each, and :class:`RejectWriter` writes them next to
the input. Good rows come out as :class:`Parsed`, whose ``values`` have exactly the
columns of :class:`dispatcher.store.table.AccountBase`.

The file is streamed: memory stays bounded whatever its size; only the set of account ids
already seen grows (to report duplicates). Apart from reading the input and writing the
reject file this module does no I/O, and none at import time.
"""

from __future__ import annotations

import csv
import difflib
import functools
import multiprocessing
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Literal, cast

import phonenumbers
from babel.core import Locale, UnknownLocaleError
from babel.numbers import list_currencies
from email_validator import EmailNotValidError, EmailSyntaxError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from phonenumbers import timezone as phone_timezone

from dispatcher.domain.money import minor_digits
from dispatcher.error import InputError
from dispatcher.spreadsheet import csv_safe
from dispatcher.zone import address_zone, country_zones, same_clock, zone_ok

if TYPE_CHECKING:
    from _csv import Writer as _CsvWriter

__all__ = [
    "COLUMNS",
    "FLAG_COLUMNS",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "VALUE_KEYS",
    "Parsed",
    "RejectWriter",
    "Rejected",
    "TimezoneSource",
    "read_accounts",
]

REQUIRED_COLUMNS: Final = ("account_id", "full_name", "balance", "currency", "due_date")
FLAG_COLUMNS: Final = (
    "dispute",
    "bankruptcy",
    "cease_and_desist",
    "deceased",
    "do_not_contact",
    "opt_out_sms",
    "opt_out_email",
)
OPTIONAL_COLUMNS: Final = (
    "phone",
    "email",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "timezone",
    "locale",
    "jurisdiction",
    "status",
    *FLAG_COLUMNS,
    "promise_to_pay_until",
    "assigned_to",
)
#: Every column of the contract, in the order DESIGN.md lists them.
COLUMNS: Final = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)

#: How an account's time zone was found. ``country_ambiguous``: the country spans several
#: zones with different clocks and nothing narrowed it down; the zone recorded is the
#: country's most populous one, and contact windows must treat it as uncertain.
TimezoneSource = Literal[
    "explicit",
    "postal",
    "region",
    "region_ambiguous",
    "phone",
    "country",
    "country_ambiguous",
    "default",
]

ACCOUNT_ID_MAX: Final = 64
_MAX_MINOR: Final = 2**63 - 1
_STATUSES: Final = frozenset({"open", "paid", "closed"})
_TRUE: Final = frozenset({"true", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "0", "no", "n", ""})
_BALANCE_RE: Final = re.compile(r"([+-]?)(?=\.?[0-9])([0-9]*)(?:\.([0-9]*))?")
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_JURISDICTION_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")

# Codes babel lists as territories that are not ISO 3166-1 alpha-2 country codes.
_NOT_COUNTRIES: Final = frozenset(
    {"CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "UN", "XA", "XB", "ZZ"}
)
# China has one legal time (Beijing time); tzdata's Asia/Urumqi is Xinjiang's informal
# clock, so the country's zone is not ambiguous.
_LEGAL_SINGLE_ZONE: Final = {"CN": "Asia/Shanghai"}
# The most populous zone of countries whose zones differ, used for country_ambiguous.
_POPULOUS_ZONE: Final = {
    "AR": "America/Argentina/Buenos_Aires",
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "CA": "America/Toronto",
    "CD": "Africa/Kinshasa",
    "CL": "America/Santiago",
    "EC": "America/Guayaquil",
    "ES": "Europe/Madrid",
    "ID": "Asia/Jakarta",
    "KZ": "Asia/Almaty",
    "MN": "Asia/Ulaanbaatar",
    "MX": "America/Mexico_City",
    "NZ": "Pacific/Auckland",
    "PT": "Europe/Lisbon",
    "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv",
    "US": "America/New_York",
}
_US_STATE_PACKS: Final = {
    "MA": "US-MA",
    "MASSACHUSETTS": "US-MA",
    "WA": "US-WA",
    "WASHINGTON": "US-WA",
}
_JURISDICTION_BY_COUNTRY: Final = {"US": "US", "GB": "UK", "CN": "CN"}
_LOCALE_BY_COUNTRY: Final = {"CN": "zh-CN", "TW": "zh-TW"}
_DEFAULT_LOCALE: Final = "en-US"
_DEFAULT_JURISDICTION: Final = "default"
_PARSE_PROBLEMS: Final = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: (
        "has no valid country code (+...) and no country to read it with"
    ),
    phonenumbers.NumberParseException.NOT_A_NUMBER: "is not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "is too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "is too short",
    phonenumbers.NumberParseException.TOO_LONG: "is too long",
}


@dataclass(frozen=True, slots=True)
class Parsed:
    """A valid row: ``values`` has exactly the columns of ``AccountBase``."""

    line: int
    values: dict[str, object]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row that cannot be imported, with the line it starts on and why.

    ``raw`` maps the header's column names (lower case) to the values as read; fields
    beyond the header's width are kept as ``extra_1``, ``extra_2``...
    """

    line: int
    raw: dict[str, str]
    reason: str


# --------------------------------------------------------------------------- lookups


@functools.cache
def _currencies() -> frozenset[str]:
    return frozenset(list_currencies())


@functools.cache
def _countries() -> frozenset[str]:
    names = Locale("en").territories
    babel = {c for c in names if isinstance(c, str) and len(c) == 2 and c.isalpha()}
    babel -= _NOT_COUNTRIES
    return frozenset(babel | set(phonenumbers.SUPPORTED_REGIONS))


@functools.lru_cache(maxsize=1024)  # keyed by file content: bounded
@functools.cache
def _country_zone(country: str) -> tuple[str, bool] | None:
    """The zone of a country and whether it is the country's only clock."""
    zones = country_zones(country)
    if not zones:
        return None
    if country in _LEGAL_SINGLE_ZONE:
        return _LEGAL_SINGLE_ZONE[country], True
    preferred = _POPULOUS_ZONE.get(country, "")
    zone = preferred if preferred in zones else zones[0]
    return zone, same_clock(zones)


_LOCALE_RE: Final = re.compile(
    r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?"
    r"((?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)"
)


@functools.lru_cache(maxsize=1024)
def _locale_tag(text: str) -> str | None:
    """The BCP 47 form of a locale babel knows (``en_us`` -> ``en-US``), or None.

    The tag keeps the subtags as given, only in their canonical case: babel would add
    likely subtags (``zh-CN`` -> ``zh-Hans-CN``), but templates are named by the tag the
    customer's file uses, and ``zh-CN`` must stay ``zh-CN``.
    """
    match = _LOCALE_RE.fullmatch(text)
    if match is None or match.group(1).lower() == "und":
        return None
    territory = match.group(3)
    if territory and territory.isalpha() and territory.upper() not in _countries():
        return None
    try:
        Locale.parse(text.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    language, script, _, variants = match.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if territory:
        parts.append(territory.upper())
    parts += [v.lower() for v in re.split("[-_]", variants) if v]
    return "-".join(parts)


_PLAIN_EMAIL: Final = re.compile(
    r"([a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*)"
    r"@([A-Za-z0-9.-]+)"
)
_PLAIN_EMAIL_MAX: Final = 200  # well under RFC 5321's 254, so no length rule can apply


def phone_e164(text: str, region: str | None) -> str | None:
    """``text`` as the importer stores a phone: E.164 of the parsed number (``region`` for
    national numbers), or None when it is not a valid number. Used to find the accounts
    of a number that writes to us (an inbound STOP)."""
    try:
        number = phonenumbers.parse(text.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _normalised_email(text: str) -> str:
    """The normalised address (email-validator, no DNS) or EmailNotValidError.

    Most addresses are plain ASCII ``local@domain``; for those, email-validator returns
    the local part as is and checks the domain alone, so the domain's result is cached
    and reused (its error, too). Anything else goes through email-validator in full.
    """
    match = _PLAIN_EMAIL.fullmatch(text)
    if (
        match is None
        or len(text) > _PLAIN_EMAIL_MAX
        or len(match.group(1)) > 64
        or "xn--" in text.lower()
        or match.group(1).lower() in CASE_INSENSITIVE_MAILBOX_NAMES
    ):
        return str(validate_email(text, check_deliverability=False).normalized)
    domain, problem = _email_domain(match.group(2))
    if problem:
        raise EmailSyntaxError(problem)
    return f"{match.group(1)}@{domain}"


@functools.lru_cache(maxsize=4096)
def _email_domain(domain: str) -> tuple[str, str]:
    """(normalised domain, "") or ("", what is wrong with it)."""
    try:
        checked = validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError as exc:
        return "", str(exc)
    return str(checked.domain), ""


# C0 controls but tab, LF and CR, and DEL: never text, and PostgreSQL cannot store NUL.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPED_BYTE: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def _show(text: str) -> str:
    """``repr`` of a value as read, with bytes that were not UTF-8 shown as ``\\xNN``."""
    shown = repr(text)
    if _is_utf8(text):
        return shown
    # repr shows a byte kept by surrogateescape as \udcNN, after an even run of backslashes
    return _ESCAPED_BYTE.sub(r"\1\\x\2", shown)


def _is_utf8(text: str) -> bool:
    """False if ``text`` holds bytes that were not UTF-8 (read with surrogateescape)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- the header


def _open(path: Path) -> IO[str]:
    try:
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_header(path: Path, reader: Iterator[list[str]]) -> list[str]:
    """The header's column names (trimmed, lower case); raises InputError if unusable."""
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{path}: the header row is not valid CSV ({exc})") from None
    if first is None or not any(f.strip() for f in first):
        what = "the file is empty" if first is None else "line 1 is blank"
        raise InputError(
            f"{path}: {what}; expected a header row with at least the columns "
            + ", ".join(REQUIRED_COLUMNS)
        )
    header = [f.strip().lower() for f in first]
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append("missing required column(s) " + ", ".join(missing))
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        shown = []
        for name in unknown:
            close = difflib.get_close_matches(name, COLUMNS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            shown.append(f"{_show(name)}{hint}")
        problems.append("unknown column(s) " + ", ".join(shown))
    repeated = sorted({c for c in header if c in COLUMNS and header.count(c) > 1})
    if repeated:
        problems.append("repeated column(s) " + ", ".join(repeated))
    if problems:
        raise InputError(f"{path}: header: " + "; ".join(problems))
    return header


# --------------------------------------------------------------------------- the rows


#: The keys of :attr:`Parsed.values`: the columns of ``AccountBase``, in its order.
VALUE_KEYS: Final = (
    "account_id",
    "full_name",
    "balance_minor",
    "currency",
    "due_date",
    "phone",
    "email",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "timezone",
    "timezone_source",
    "locale",
    "jurisdiction",
    "status",
    *FLAG_COLUMNS,
    "promise_to_pay_until",
    "assigned_to",
)

# What checking one row gives: its values in VALUE_KEYS order, or the reasons it is bad.
_Outcome = tuple[object, ...] | list[str]


class _Row:
    """Validates one row's fields; collects every problem rather than the first."""

    __slots__ = ("default_region", "default_timezone", "errors", "header", "index")

    def __init__(self, header: list[str], default_timezone: str, default_region: str | None):
        self.header = header
        self.index = {name: i for i, name in enumerate(header)}
        self.default_timezone = default_timezone
        self.default_region = default_region
        self.errors: list[str] = []

    def check(self, fields: list[str]) -> _Outcome:
        """The values of a row in VALUE_KEYS order, or the list of what is wrong."""
        header = self.header
        if len(fields) != len(header):
            return [f"row: has {len(fields)} fields, the header has {len(header)}"]
        if not _is_utf8("".join(fields)):
            return [
                f"{name}: {_show(field)} is not valid UTF-8 text"
                for name, field in zip(header, fields, strict=True)
                if not _is_utf8(field)
            ]
        if _CONTROL.search("".join(fields)):
            return [
                f"{name}: {_show(field)} contains control characters"
                for name, field in zip(header, fields, strict=True)
                if _CONTROL.search(field)
            ]
        return self.convert(fields)

    def convert(self, fields: list[str]) -> _Outcome:
        self.errors = errors = []
        index = self.index
        values = [f.strip() for f in fields]

        def get(name: str) -> str:
            i = index.get(name)
            return "" if i is None else values[i]

        for name in REQUIRED_COLUMNS:
            if not values[index[name]]:
                errors.append(f"{name}: required value is empty")
        account_id = get("account_id")
        if len(account_id) > ACCOUNT_ID_MAX:
            errors.append(f"account_id: longer than {ACCOUNT_ID_MAX} characters")

        currency = get("currency").upper()
        if currency and currency not in _currencies():
            errors.append(f"currency: {_show(currency)} is not an ISO 4217 currency code")
            currency_ok = False
        else:
            currency_ok = bool(currency)
        balance_minor = self._balance(get("balance"), currency if currency_ok else None)
        due_date = self._date("due_date", get("due_date"))
        promise = self._date("promise_to_pay_until", get("promise_to_pay_until"))

        country: str | None = get("country").upper() or None
        if country is not None and country not in _countries():
            hint = " (did you mean GB?)" if country == "UK" else ""
            errors.append(f"country: {_show(country)} is not an ISO 3166 alpha-2 code{hint}")
            country = None
        phone = self._phone(get("phone"), country or self.default_region)
        email = self._email(get("email"))

        timezone = get("timezone")
        if timezone and not zone_ok(timezone):
            errors.append(f"timezone: {_show(timezone)} is not a known IANA time zone")

        locale_text = get("locale")
        locale: str | None = None
        if locale_text:
            locale = _locale_tag(locale_text)
            if locale is None:
                errors.append(f"locale: {_show(locale_text)} is not a known locale (BCP 47)")

        jurisdiction = get("jurisdiction")
        if jurisdiction and not _JURISDICTION_RE.fullmatch(jurisdiction):
            errors.append(f"jurisdiction: {_show(jurisdiction)} is not a policy pack id")

        status = get("status").lower() or "open"
        if status not in _STATUSES:
            errors.append(f"status: {_show(get('status'))} is not one of open, paid, closed")

        flags: dict[str, bool] = {}
        for name in FLAG_COLUMNS:
            text = get(name).lower()
            if text in _TRUE:
                flags[name] = True
            elif text in _FALSE:
                flags[name] = False
            else:
                errors.append(f"{name}: {_show(get(name))} is not a boolean (true/false)")

        if errors:
            return errors

        region = get("region") or None
        located = None if timezone else address_zone(country, region, get("postal_code"))
        if timezone:
            source: TimezoneSource = "explicit"
        elif located is not None:
            # The address says where the customer lives; a mobile number may have moved.
            timezone, source = located[0], cast(TimezoneSource, located[1])
        else:
            timezone, source = self._resolve_zone(phone, country)
        return (
            account_id,
            get("full_name"),
            balance_minor,
            currency,
            due_date,
            None
            if phone is None
            else phonenumbers.format_number(phone[0], phonenumbers.PhoneNumberFormat.E164),
            email,
            get("address_line1") or None,
            get("address_line2") or None,
            get("city") or None,
            region,
            get("postal_code") or None,
            country,
            timezone,
            source,
            locale or _LOCALE_BY_COUNTRY.get(country or "", _DEFAULT_LOCALE),
            jurisdiction or _default_jurisdiction(country, region),
            status,
            *(flags[name] for name in FLAG_COLUMNS),
            promise,
            get("assigned_to") or None,
        )

    def _balance(self, text: str, currency: str | None) -> int:
        if not text:
            return 0
        match = _BALANCE_RE.fullmatch(text)
        if match is None:
            self.errors.append(f"balance: {_show(text)} is not a plain decimal number")
            return 0
        sign, whole, fraction = match.group(1), match.group(2), (match.group(3) or "")
        fraction = fraction.rstrip("0")
        if sign == "-" and (whole.strip("0") or fraction):
            self.errors.append(f"balance: {_show(text)} is negative")
            return 0
        if currency is None:
            return 0
        precision = minor_digits(currency)
        if len(fraction) > precision:
            self.errors.append(
                f"balance: {_show(text)} has {len(fraction)} decimals but {currency} "
                f"has {precision}"
            )
            return 0
        minor = int(whole or "0") * int(10**precision) + int(fraction.ljust(precision, "0") or "0")
        if minor > _MAX_MINOR:
            self.errors.append(f"balance: {_show(text)} is too large")
            return 0
        return minor

    def _date(self, name: str, text: str) -> date | None:
        if not text:
            return None
        if _DATE_RE.fullmatch(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        self.errors.append(f"{name}: {_show(text)} is not a date (YYYY-MM-DD)")
        return None

    def _phone(self, text: str, region: str | None) -> tuple[phonenumbers.PhoneNumber, str] | None:
        """The valid number and its region, or None (with the problem in ``errors``)."""
        if not text:
            return None
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException as exc:
            why = _PARSE_PROBLEMS.get(exc.error_type, "cannot be read as a phone number")
            self.errors.append(f"phone: {_show(text)} {why}")
            return None
        # What is_valid_number does, keeping the region: _resolve_zone needs it too.
        where = phonenumbers.region_code_for_number(number)
        if where is None or not phonenumbers.is_valid_number_for_region(number, where):
            where = where or region or "any country"
            self.errors.append(f"phone: {_show(text)} is not a valid number in {where}")
            return None
        return number, where

    def _email(self, text: str) -> str | None:
        if not text:
            return None
        try:
            return _normalised_email(text)
        except EmailNotValidError as exc:
            self.errors.append(f"email: {_show(text)} is not a valid address ({exc})")
            return None

    def _resolve_zone(
        self, phone: tuple[phonenumbers.PhoneNumber, str] | None, country: str | None
    ) -> tuple[str, TimezoneSource]:
        """The zone of an account without an explicit one, and how it was found.

        The phone first, when it is of the account's country (or there is no country):
        its area code locates the customer, so the zone is "phone" when every zone of the
        number keeps the same clock. A phone of another country is not trusted over the
        address. Then the country, "country" when it has one clock. A country with
        several clocks gives "country_ambiguous" with the phone's zone if it narrowed the
        choice, else the country's most populous zone. Only when nothing is known is the
        configured default used ("default").
        """
        phone_zones: tuple[str, ...] = ()
        if phone is not None:
            number, region = phone
            if country is None or region == country:
                country = country or region
                found = phone_timezone.time_zones_for_number(number)
                phone_zones = tuple(z for z in found if z != "Etc/Unknown" and zone_ok(z))
        by_country = _country_zone(country) if country else None
        if phone_zones and same_clock(phone_zones):
            if by_country is not None and by_country[0] in phone_zones:
                return by_country[0], "phone"
            return phone_zones[0], "phone"
        if by_country is not None:
            zone, single = by_country
            if single:
                return zone, "country"
            if phone_zones and zone not in phone_zones:
                zone = phone_zones[0]
            return zone, "country_ambiguous"
        if phone_zones:
            return phone_zones[0], "country_ambiguous"
        return self.default_timezone, "default"


def _default_jurisdiction(country: str | None, region: str | None) -> str:
    """The policy pack of an account whose file does not name one (DESIGN.md)."""
    if country == "US" and region:
        pack = _US_STATE_PACKS.get(region.upper().removeprefix("US-"))
        if pack is not None:
            return pack
    return _JURISDICTION_BY_COUNTRY.get(country or "", _DEFAULT_JURISDICTION)


def _raw(header: list[str], fields: list[str]) -> dict[str, str]:
    raw = {name: (fields[i] if i < len(fields) else "") for i, name in enumerate(header)}
    for extra, value in enumerate(fields[len(header) :], start=1):
        raw[f"extra_{extra}"] = value
    return raw


def read_accounts(
    path: Path,
    *,
    default_timezone: str,
    default_region: str | None = None,
    workers: int = 1,
) -> Iterator[Parsed | Rejected]:
    """Stream the accounts CSV at ``path`` as one :class:`Parsed` or :class:`Rejected` per row.

    Implements DESIGN.md "Accounts CSV": bad rows never abort the file, each comes out
    with the physical line it starts on (the header is line 1; a quoted field spanning
    several lines is counted in full) and a reason that names the field. Values are
    trimmed; the file is read as UTF-8 (a leading BOM is fine) and a row with bytes that
    are not UTF-8 is rejected on its own. Duplicate account ids are rejected from their
    second occurrence on, even if the first was itself rejected: two rows for one account
    mean the file is wrong, and guessing which is newer could import stale data.

    ``default_timezone`` is used when neither the row nor its phone or country tell the
    zone; ``default_region`` reads national-format phone numbers of rows without a
    country.

    Problems with the file as a whole raise :class:`~dispatcher.error.InputError` at once
    (before the first row is read): the file is missing, unreadable or empty, or the
    header lacks a required column, repeats one, or has a column the contract does not
    know. Unknown columns are an error, not ignored, because a typo such as ``phon``
    would otherwise silently drop that data from every row. Header names are matched
    ignoring case and surrounding spaces.

    ``workers`` > 1 checks rows in that many worker processes (phone and email checks
    dominate the cost); results still come out in file order and memory stays bounded,
    since only a few batches are in flight at a time. The workers are spawned, so the
    calling program's main module must be safe to import (the usual ``if __name__ ==
    "__main__"`` guard; console scripts and ``python -m`` are).
    """
    if not zone_ok(default_timezone):
        raise InputError(f"default time zone {default_timezone!r} is not a known IANA zone")
    if default_region is not None and default_region not in _countries():
        raise InputError(f"default region {default_region!r} is not an ISO 3166 alpha-2 code")
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    with _open(path) as stream:
        header = _read_header(path, csv.reader(stream))
    return _rows(path, header, _Row(header, default_timezone, default_region), workers)


_BATCH: Final = 1000


def _records(stream: IO[str]) -> Iterator[tuple[int, list[str] | str]]:
    """(start line, fields) per record after the header, or (start line, CSV error)."""
    reader = csv.reader(stream)
    next(reader)
    last = reader.line_num
    while True:
        start = last + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            last = reader.line_num
            yield start, f"row: not valid CSV ({exc})"
            continue
        last = reader.line_num
        if fields:  # a blank line is not a record
            yield start, fields


def _batches(
    records: Iterator[tuple[int, list[str] | str]],
) -> Iterator[list[tuple[int, list[str] | str]]]:
    batch: list[tuple[int, list[str] | str]] = []
    for record in records:
        batch.append(record)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_batch(row: _Row, batch: list[tuple[int, list[str] | str]]) -> list[_Outcome]:
    return [[fields] if isinstance(fields, str) else row.check(fields) for _, fields in batch]


_worker_row: _Row | None = None


def _worker_init(row: _Row) -> None:
    global _worker_row
    _worker_row = row


def _worker_check(batch: list[tuple[int, list[str] | str]]) -> list[_Outcome]:
    assert _worker_row is not None
    return _check_batch(_worker_row, batch)


def _checked(
    row: _Row, records: Iterator[tuple[int, list[str] | str]], workers: int
) -> Iterator[tuple[list[tuple[int, list[str] | str]], list[_Outcome]]]:
    """Batches of records with their outcomes, in file order."""
    if workers == 1:
        for batch in _batches(records):
            yield batch, _check_batch(row, batch)
        return
    context = multiprocessing.get_context("spawn")  # safe in threaded callers too
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(row,)
    ) as pool:
        pending: deque[tuple[list[tuple[int, list[str] | str]], Future[list[_Outcome]]]]
        pending = deque()
        try:
            for batch in _batches(records):
                pending.append((batch, pool.submit(_worker_check, batch)))
                if len(pending) >= 2 * workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _rows(path: Path, header: list[str], row: _Row, workers: int) -> Iterator[Parsed | Rejected]:
    seen: dict[str, int] = {}
    id_index = header.index("account_id")
    width = len(header)
    with _open(path) as stream:
        for batch, outcomes in _checked(row, _records(stream), workers):
            for (start, fields), outcome in zip(batch, outcomes, strict=True):
                if isinstance(fields, str):
                    yield Rejected(start, {}, fields)
                    continue
                if len(fields) == width and (account_id := fields[id_index].strip()):
                    first = seen.setdefault(account_id, start)
                    if first != start:
                        duplicate = f"account_id: duplicate account_id, first seen on line {first}"
                        outcome = (
                            [duplicate, *outcome] if isinstance(outcome, list) else [duplicate]
                        )
                if isinstance(outcome, list):
                    yield Rejected(start, _raw(header, fields), "; ".join(outcome))
                else:
                    yield Parsed(start, dict(zip(VALUE_KEYS, outcome, strict=True)))


# --------------------------------------------------------------------------- rejects


class RejectWriter:
    """Writes rejected rows to a CSV next to the input (DESIGN.md, "Accounts CSV").

    Columns: ``line, reason``, then the input's own header columns with the values as
    read (undecodable bytes are written back unchanged), so a person can fix the rows
    and see where each came from. The file is created only when the first reject
    arrives; when a run ends with none, a reject file left by an earlier run is removed,
    so its presence always describes the latest run.
    """

    def __init__(
        self, path: Path, header: Sequence[str] | None = None, *, source: Path | None = None
    ):
        self._path = path
        self._header = list(header) if header is not None else None
        self._source = source
        self._stream: IO[str] | None = None
        self._writer: _CsvWriter | None = None
        self._keys: list[str] = []
        self._count = 0
        self._closed = False

    @classmethod
    def for_input(cls, path: Path) -> RejectWriter:
        """A writer for ``<stem>.rejects.csv`` beside ``path``, with ``path``'s header."""
        return cls(path.with_name(f"{path.stem}.rejects.csv"), source=path)

    @property
    def path(self) -> Path:
        """Where the rejects go (the file exists only once one was written)."""
        return self._path

    @property
    def count(self) -> int:
        """How many rejected rows have been written."""
        return self._count

    def __enter__(self) -> RejectWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, rejected: Rejected) -> None:
        """Append one rejected row, creating the file on the first."""
        if self._closed:
            raise ValueError(f"{self._path}: reject writer is closed")
        writer = self._writer or self._start(rejected)
        keys = self._keys
        raw = rejected.raw
        cells = [str(rejected.line), rejected.reason]
        cells += [raw.get(key, "") for key in keys]
        cells += [value for key, value in raw.items() if key not in keys]
        # People open this file in a spreadsheet: a cell sent to us as a formula is
        # written as text (an apostrophe first), never run.
        writer.writerow([csv_safe(cell) for cell in cells])
        self._count += 1

    def close(self) -> None:
        """Finish the file, or remove a stale one if this run rejected nothing."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            self._stream.close()
            self._stream = None
            self._writer = None
        elif self._count == 0:
            self._path.unlink(missing_ok=True)

    def _start(self, first: Rejected) -> _CsvWriter:
        header = self._header
        if header is None and self._source is not None:
            header = _source_header(self._source)
        if header is None:
            header = [k for k in first.raw if not k.startswith("extra_")]
        self._keys = [h.strip().lower() for h in header]
        self._stream = self._path.open("w", encoding="utf-8", errors="surrogateescape", newline="")
        self._writer = writer = csv.writer(self._stream)
        writer.writerow(["line", "reason", *header])
        return writer


def _source_header(source: Path) -> list[str] | None:
    try:
        with source.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            return next(csv.reader(f), None)
    except (OSError, csv.Error):
        return None
