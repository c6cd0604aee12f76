"""A synthetic but realistic portfolio of accounts, as rows of the accounts CSV.

Used by ``dispatcher demo``, the tests and the benchmarks, so every row it yields is a
valid row of the contract (DESIGN.md, "Accounts CSV") and the mix looks like a real
book: mostly US accounts across several states and zones (including Massachusetts and
Washington with their own policy packs), a large Chinese share in CNY with +86 mobile
numbers, British accounts in GBP, a few euro-zone and Canadian ones; due dates spread
from a week before due to 250 days past due, more of them early; a few paid or closed
accounts and the suppression flags at realistic low rates; some accounts without email,
address or phone.

Contact data is fake: US and Canadian numbers are in the 555-01XX range reserved for
fiction, emails use the reserved example.com/.net/.org domains; numbers of other
countries are random in valid mobile ranges, so never point a real provider at them.
The output is a pure function of ``count``, ``today`` and ``seed``.
"""

from __future__ import annotations

import csv
import functools
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

import phonenumbers

from dispatcher.account_file import COLUMNS

__all__ = ["generate_portfolio", "write_portfolio"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@dataclass(frozen=True, slots=True)
class _Place:
    city: str
    region: str
    postal_code: str
    area_code: str
    timezone: str


_US_PLACES: Final = (
    _Place("Boston", "MA", "02110", "617", "America/New_York"),
    _Place("Cambridge", "MA", "02139", "857", "America/New_York"),
    _Place("Worcester", "MA", "01608", "508", "America/New_York"),
    _Place("Springfield", "MA", "01103", "413", "America/New_York"),
    _Place("Seattle", "WA", "98101", "206", "America/Los_Angeles"),
    _Place("Spokane", "WA", "99201", "509", "America/Los_Angeles"),
    _Place("Tacoma", "WA", "98402", "253", "America/Los_Angeles"),
    _Place("New York", "NY", "10001", "212", "America/New_York"),
    _Place("Brooklyn", "NY", "11201", "718", "America/New_York"),
    _Place("Buffalo", "NY", "14202", "716", "America/New_York"),
    _Place("Los Angeles", "CA", "90012", "213", "America/Los_Angeles"),
    _Place("San Francisco", "CA", "94103", "415", "America/Los_Angeles"),
    _Place("San Diego", "CA", "92101", "619", "America/Los_Angeles"),
    _Place("Houston", "TX", "77002", "713", "America/Chicago"),
    _Place("Dallas", "TX", "75201", "214", "America/Chicago"),
    _Place("Austin", "TX", "78701", "512", "America/Chicago"),
    _Place("El Paso", "TX", "79901", "915", "America/Denver"),
    _Place("Miami", "FL", "33130", "305", "America/New_York"),
    _Place("Orlando", "FL", "32801", "407", "America/New_York"),
    _Place("Chicago", "IL", "60601", "312", "America/Chicago"),
    _Place("Phoenix", "AZ", "85004", "602", "America/Phoenix"),
    _Place("Denver", "CO", "80202", "303", "America/Denver"),
    _Place("Atlanta", "GA", "30303", "404", "America/New_York"),
    _Place("Honolulu", "HI", "96813", "808", "Pacific/Honolulu"),
    _Place("Anchorage", "AK", "99501", "907", "America/Anchorage"),
)
# Weights of the places above: the big states and the two with their own packs lead.
_US_WEIGHTS: Final = (8, 3, 3, 2, 7, 2, 2, 9, 6, 2, 8, 5, 4, 5, 5, 3, 1, 5, 3, 6, 3, 3, 4, 1, 1)
_CA_PLACES: Final = (
    _Place("Toronto", "ON", "M5H 2N2", "416", "America/Toronto"),
    _Place("Vancouver", "BC", "V6B 1A1", "604", "America/Vancouver"),
    _Place("Montreal", "QC", "H2Y 1C6", "514", "America/Toronto"),
)
_CN_PLACES: Final = (
    ("北京", "北京市", "100020"),
    ("上海", "上海市", "200001"),
    ("广州", "广东省", "510030"),
    ("深圳", "广东省", "518000"),
    ("成都", "四川省", "610016"),
    ("杭州", "浙江省", "310006"),
    ("武汉", "湖北省", "430014"),
    ("西安", "陕西省", "710003"),
)
_GB_PLACES: Final = (
    ("London", "SW1A 2AA"),
    ("Manchester", "M1 1AE"),
    ("Birmingham", "B1 1BB"),
    ("Leeds", "LS1 4AP"),
    ("Glasgow", "G1 1XQ"),
    ("Bristol", "BS1 4DJ"),
)
_EU_PLACES: Final = {
    "DE": (("Berlin", "10115"), ("München", "80331"), ("Hamburg", "20095"), ("Köln", "50667")),
    "FR": (("Paris", "75001"), ("Lyon", "69001"), ("Marseille", "13001")),
}

_US_FIRST: Final = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Carlos Maria Jose Ana Kevin Emily Brian "
    "Ashley Daniel Michelle Anthony Nicole"
)
_US_LAST: Final = _words(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson O'Brien Nguyen"
)
_US_STREETS: Final = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Pine St",
    "Elm St",
    "Washington Blvd",
    "Park Ave",
    "Lake Rd",
    "Hill St",
)
_GB_FIRST: Final = _words(
    "Oliver Amelia George Isla Harry Ava Jack Mia Charlie Grace Thomas Sophie"
)
_GB_LAST: Final = _words("Smith Jones Taylor Brown Williams Wilson Evans Davies Walker Wright")
_GB_STREETS: Final = ("High Street", "Station Road", "Church Lane", "Victoria Road", "Mill Lane")
_DE_FIRST: Final = _words("Lukas Anna Leon Marie Paul Sophie Jonas Emma Felix Mia Jürgen Renée")
_DE_LAST: Final = _words(
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Dubois Martin Bernard"
)
_EU_STREETS: Final = (
    "Hauptstraße",
    "Bahnhofstraße",
    "Gartenweg",
    "Rue de la Paix",
    "Rue Victor Hugo",
)
_CN_SURNAMES: Final = (*"王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗", "欧阳", "司马")
_CN_GIVEN: Final = _words(
    "伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀英 霞 平 刚 桂英 建华 志强 晓东 海燕"
)
_CN_STREETS: Final = ("建国路", "人民路", "中山路", "解放路", "南京路", "长安街", "天府大道")
_CN_MOBILE_PREFIXES: Final = _words("138 139 135 136 137 150 151 158 159 186 187 188 189 133 177")
_GB_MOBILE_PREFIXES: Final = ("7400", "7500", "7800", "7900", "7956", "7723", "7481", "7520")
_AGENTS: Final = tuple(f"agent.{n:02d}" for n in range(1, 13))

# Days past due, as (low, high, weight): more accounts early, a long tail past 180.
_DPD_BANDS: Final = ((-7, -1, 15), (0, 30, 40), (31, 90, 22), (91, 180, 13), (181, 250, 10))
_DPD_CUM: Final = tuple(itertools.accumulate(band[2] for band in _DPD_BANDS))
_US_CUM: Final = tuple(itertools.accumulate(_US_WEIGHTS))
_TRUE_SPELLINGS: Final = ("true",) * 6 + ("TRUE", "yes", "1", "Y")


def generate_portfolio(count: int, *, today: date, seed: int = 7) -> Iterator[dict[str, str]]:
    """Yield ``count`` rows of the accounts CSV (every contract column, as text).

    The rows are deterministic for ``(count, today, seed)`` and each passes
    :func:`dispatcher.account_file.read_accounts`; see the module docstring for the mix.
    Account ids are ``AC00000001``, ``AC00000002``... so ids are unique within a file.
    """
    rng = random.Random(seed)
    for n in range(1, count + 1):
        yield _row(rng, n, today)


def write_portfolio(path: Path, count: int, *, today: date, seed: int = 7) -> None:
    """Stream :func:`generate_portfolio` into a CSV file at ``path`` (UTF-8, header row).

    The file is written beside ``path`` and renamed into place, so an interrupted run
    never leaves a truncated portfolio that later looks complete.
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(generate_portfolio(count, today=today, seed=seed))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _row(rng: random.Random, n: int, today: date) -> dict[str, str]:
    row = dict.fromkeys(COLUMNS, "")
    row["account_id"] = f"AC{n:08d}"
    pick = rng.random()
    if pick < 0.60:
        _us(rng, row)
    elif pick < 0.85:
        _cn(rng, row)
    elif pick < 0.95:
        _gb(rng, row)
    elif pick < 0.98:
        _eu(rng, row, "DE")
    elif pick < 0.99:
        _eu(rng, row, "FR")
    else:
        _ca(rng, row)

    low, high, _ = rng.choices(_DPD_BANDS, cum_weights=_DPD_CUM)[0]
    row["due_date"] = (today - timedelta(days=rng.randint(low, high))).isoformat()

    status = rng.random()
    if status < 0.02:
        row["status"] = "paid"
        row["balance"] = "0.00"
    elif status < 0.03:
        row["status"] = "closed"
    elif rng.random() < 0.5:
        row["status"] = "open"

    for flag, rate in (
        ("dispute", 0.02),
        ("opt_out_sms", 0.02),
        ("opt_out_email", 0.01),
        ("bankruptcy", 0.01),
        ("cease_and_desist", 0.01),
        ("deceased", 0.01),
        ("do_not_contact", 0.01),
    ):
        if rng.random() < rate:
            row[flag] = rng.choice(_TRUE_SPELLINGS)
        elif rng.random() < 0.1:
            row[flag] = "false"
    if rng.random() < 0.02:
        row["promise_to_pay_until"] = (today + timedelta(days=rng.randint(1, 30))).isoformat()
    if rng.random() < 0.3:
        row["assigned_to"] = rng.choice(_AGENTS)
    if rng.random() < 0.15:
        row["email"] = ""
    if rng.random() < 0.10:
        for column in ("address_line1", "address_line2", "city", "region", "postal_code"):
            row[column] = ""
    return row


def _amount(rng: random.Random, median: float) -> str:
    """A balance in a two-decimal currency, log-normal around ``median``."""
    minor = max(500, round(rng.lognormvariate(0, 0.9) * median * 100))
    return f"{minor // 100}.{minor % 100:02d}"


def _fictional_nanp(rng: random.Random, area_code: str, region: str) -> str:
    """A number in the 555-0100..0199 range reserved for fiction, checked valid."""
    line = rng.randint(100, 199)
    _check(f"+1{area_code}5550{line}", region)
    style = rng.random()
    if style < 0.7:
        return f"({area_code}) 555-0{line}"
    if style < 0.8:
        return f"{area_code}-555-0{line}"
    return f"+1 {area_code} 555 0{line}"


@functools.cache
def _check(e164: str, region: str) -> None:
    """Fail loudly if a generated number is not valid: every row must import."""
    number = phonenumbers.parse(e164, region)
    if not phonenumbers.is_valid_number(number):
        raise AssertionError(f"generated phone {e164} is not valid")


def _us(rng: random.Random, row: dict[str, str]) -> None:
    place = rng.choices(_US_PLACES, cum_weights=_US_CUM)[0]
    first, last = rng.choice(_US_FIRST), rng.choice(_US_LAST)
    row.update(
        full_name=f"{first} {last}",
        balance=_amount(rng, 1500.0),
        currency="USD",
        country="US",
        address_line1=f"{rng.randint(1, 9999)} {rng.choice(_US_STREETS)}",
        address_line2=f"Apt {rng.randint(1, 40)}{rng.choice('ABCD')}" if rng.random() < 0.2 else "",
        city=place.city,
        region=place.region,
        postal_code=place.postal_code,
        email=f"{first}.{last}{rng.randint(1, 99)}@example.com".lower().replace("'", ""),
    )
    if rng.random() < 0.92:
        row["phone"] = _fictional_nanp(rng, place.area_code, "US")
    if rng.random() < 0.3:
        row["timezone"] = place.timezone
    if rng.random() < 0.6:
        row["locale"] = "en-US"


def _cn(rng: random.Random, row: dict[str, str]) -> None:
    city, province, postal = rng.choice(_CN_PLACES)
    prefix = rng.choice(_CN_MOBILE_PREFIXES)
    subscriber = f"{rng.randint(0, 99_999_999):08d}"
    _check(f"+86{prefix}00000000", "CN")  # the whole prefix range is valid: check its ends
    _check(f"+86{prefix}99999999", "CN")
    phone = (
        f"+86 {prefix} {subscriber[:4]} {subscriber[4:]}"
        if rng.random() < 0.5
        else f"{prefix}{subscriber}"
    )
    row.update(
        full_name=rng.choice(_CN_SURNAMES) + rng.choice(_CN_GIVEN),
        balance=_amount(rng, 8000.0),
        currency="CNY",
        country="CN",
        address_line1=f"{rng.choice(_CN_STREETS)}{rng.randint(1, 300)}号",
        address_line2=f"{rng.randint(1, 30)}栋{rng.randint(101, 2505)}室"
        if rng.random() < 0.6
        else "",
        city=city,
        region=province,
        postal_code=postal,
        email=f"{rng.randint(10_000_000, 2_999_999_999)}@example.net",
    )
    if rng.random() < 0.94:
        row["phone"] = phone
    if rng.random() < 0.2:
        row["timezone"] = "Asia/Shanghai"
    if rng.random() < 0.8:
        row["locale"] = "zh-CN" if rng.random() < 0.7 else "zh_CN"


def _gb(rng: random.Random, row: dict[str, str]) -> None:
    city, postcode = rng.choice(_GB_PLACES)
    first, last = rng.choice(_GB_FIRST), rng.choice(_GB_LAST)
    prefix = rng.choice(_GB_MOBILE_PREFIXES)
    subscriber = f"{rng.randint(0, 999_999):06d}"
    if not phonenumbers.is_valid_number(phonenumbers.parse(f"+44{prefix}{subscriber}")):
        raise AssertionError(f"generated phone +44{prefix}{subscriber} is not valid")
    row.update(
        full_name=f"{first} {last}",
        balance=_amount(rng, 1200.0),
        currency="GBP",
        country="GB",
        address_line1=f"{rng.randint(1, 200)} {rng.choice(_GB_STREETS)}",
        city=city,
        postal_code=postcode,
        locale="en-GB",
        email=f"{first[0]}.{last}@example.org".lower(),
    )
    if rng.random() < 0.92:
        row["phone"] = (
            f"0{prefix} {subscriber}" if rng.random() < 0.7 else f"+44{prefix}{subscriber}"
        )


def _eu(rng: random.Random, row: dict[str, str], country: str) -> None:
    city, postal = rng.choice(_EU_PLACES[country])
    first, last = rng.choice(_DE_FIRST), rng.choice(_DE_LAST)
    if country == "DE":
        phone = f"+49 151 {rng.randint(10_000_000, 99_999_999)}"
    else:
        # 06 3x and 06 9x hold blocks of overseas departments: stay in 06 0x..8x, not 3x.
        phone = f"+33 6 {rng.choice('0124578')}{rng.randint(0, 9_999_999):07d}"
    if not phonenumbers.is_valid_number(phonenumbers.parse(phone)):
        raise AssertionError(f"generated phone {phone} is not valid")
    row.update(
        full_name=f"{first} {last}",
        balance=_amount(rng, 1300.0),
        currency="EUR",
        country=country,
        address_line1=f"{rng.choice(_EU_STREETS)} {rng.randint(1, 120)}",
        city=city,
        postal_code=postal,
        email=f"{rng.randint(1000, 99999)}@example.org",
    )
    if rng.random() < 0.8:
        row["phone"] = phone


def _ca(rng: random.Random, row: dict[str, str]) -> None:
    place = rng.choice(_CA_PLACES)
    first, last = rng.choice(_US_FIRST), rng.choice(_US_LAST)
    row.update(
        full_name=f"{first} {last}",
        balance=_amount(rng, 1400.0),
        currency="CAD",
        country="CA",
        address_line1=f"{rng.randint(1, 999)} {rng.choice(_US_STREETS)}",
        city=place.city,
        region=place.region,
        postal_code=place.postal_code,
        email=f"{first}{rng.randint(1, 999)}@example.com".lower(),
    )
    if rng.random() < 0.7:
        row["phone"] = _fictional_nanp(rng, place.area_code, "CA")
