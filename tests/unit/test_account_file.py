"""The accounts CSV reader (DESIGN.md, "Accounts CSV"): real files, no mocks."""

from __future__ import annotations

import csv
import io
import tempfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.account_file import (
    COLUMNS,
    FLAG_COLUMNS,
    Parsed,
    Rejected,
    RejectWriter,
    _normalised_email,
    phone_e164,
    read_accounts,
)
from dispatcher.error import InputError
from dispatcher.store.table import AccountBase

DEFAULT_TZ = "America/New_York"


def good(account_id: str = "A1", **changes: str) -> dict[str, str]:
    """A valid row of every contract column, with ``changes`` applied."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        account_id=account_id,
        full_name="Jane Roe",
        balance="1234.56",
        currency="USD",
        due_date="2026-04-01",
        phone="(617) 555-0123",
        email="jane.roe@example.com",
        address_line1="1 Main St",
        city="Boston",
        region="MA",
        postal_code="02110",
        country="US",
    )
    row.update(changes)
    return row


def write(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    columns = header or list(COLUMNS)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read(path: Path, **options: object) -> list[Parsed | Rejected]:
    kwargs: dict[str, object] = {"default_timezone": DEFAULT_TZ, "default_region": "US"}
    kwargs.update(options)
    return list(read_accounts(path, **kwargs))  # type: ignore[arg-type]


def one(path: Path, **changes: str) -> Parsed | Rejected:
    [result] = read(write(path, [good(**changes)]))
    return result


def values(path: Path, **changes: str) -> dict[str, object]:
    result = one(path, **changes)
    assert isinstance(result, Parsed), result
    return result.values


# --------------------------------------------------------------------------- good rows


def test_parsed_values_have_exactly_the_account_columns(tmp_path: Path) -> None:
    got = values(tmp_path / "a.csv")
    assert list(got) == list(AccountBase.model_fields)
    assert got == {
        "account_id": "A1",
        "full_name": "Jane Roe",
        "balance_minor": 123456,
        "currency": "USD",
        "due_date": date(2026, 4, 1),
        "phone": "+16175550123",
        "email": "jane.roe@example.com",
        "address_line1": "1 Main St",
        "address_line2": None,
        "city": "Boston",
        "region": "MA",
        "postal_code": "02110",
        "country": "US",
        "timezone": "America/New_York",
        "timezone_source": "postal",
        "locale": "en-US",
        "jurisdiction": "US-MA",
        "status": "open",
        **dict.fromkeys(FLAG_COLUMNS, False),
        "promise_to_pay_until": None,
        "assigned_to": None,
    }


def test_values_are_trimmed_and_normalised(tmp_path: Path) -> None:
    got = values(
        tmp_path / "a.csv",
        account_id="  A 7 ",
        full_name=" Jane  Roe ",
        currency=" usd ",
        email=" Jane.Roe@EXAMPLE.COM ",
        country=" us ",
        status=" PAID ",
        locale=" en_gb ",
        timezone=" Europe/London ",
    )
    assert got["account_id"] == "A 7"
    assert got["full_name"] == "Jane  Roe"
    assert got["currency"] == "USD"
    assert got["email"] == "Jane.Roe@example.com"
    assert got["country"] == "US"
    assert got["status"] == "paid"
    assert got["locale"] == "en-GB"
    assert (got["timezone"], got["timezone_source"]) == ("Europe/London", "explicit")


@pytest.mark.parametrize(
    ("balance", "currency", "minor"),
    [
        ("100", "USD", 10000),
        ("100.5", "USD", 10050),
        ("0.07", "USD", 7),
        (".5", "EUR", 50),
        ("10.500", "USD", 1050),  # trailing zeros are exact, so accepted
        ("0", "USD", 0),
        ("1000", "JPY", 1000),
        ("1.234", "BHD", 1234),
        ("99999999.99", "CNY", 9999999999),
    ],
)
def test_balance_is_integer_minor_units(
    tmp_path: Path, balance: str, currency: str, minor: int
) -> None:
    got = values(tmp_path / "a.csv", balance=balance, currency=currency)
    assert got["balance_minor"] == minor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Y", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("n", False),
    ],
)
def test_flags_accept_common_spellings(tmp_path: Path, text: str, expected: bool) -> None:
    got = values(tmp_path / "a.csv", **dict.fromkeys(FLAG_COLUMNS, text))
    assert all(got[name] is expected for name in FLAG_COLUMNS)


def test_promise_date_and_assignee(tmp_path: Path) -> None:
    got = values(tmp_path / "a.csv", promise_to_pay_until="2026-05-10", assigned_to="agent.3")
    assert got["promise_to_pay_until"] == date(2026, 5, 10)
    assert got["assigned_to"] == "agent.3"


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "account_id,full_name,balance,currency,due_date\nA1,Jane Roe,10,EUR,2026-01-31\n",
        encoding="utf-8",
    )
    [result] = read(path)
    assert isinstance(result, Parsed)
    assert result.values["phone"] is None
    assert result.values["country"] is None
    assert (result.values["timezone"], result.values["timezone_source"]) == (DEFAULT_TZ, "default")
    assert result.values["jurisdiction"] == "default"
    assert result.values["locale"] == "en-US"


def test_header_matches_ignoring_case_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        " Account_ID ,FULL_NAME,Balance,currency,due_date\nA1,Jane,10,EUR,2026-01-31\n",
        encoding="utf-8",
    )
    [result] = read(path)
    assert isinstance(result, Parsed)


# --------------------------------------------------------------------------- rejects

REJECTS = [
    pytest.param({"account_id": ""}, "account_id", "required value is empty", id="id-empty"),
    pytest.param({"full_name": "  "}, "full_name", "required value is empty", id="name-empty"),
    pytest.param({"balance": ""}, "balance", "required value is empty", id="balance-empty"),
    pytest.param({"currency": ""}, "currency", "required value is empty", id="currency-empty"),
    pytest.param({"due_date": ""}, "due_date", "required value is empty", id="due-empty"),
    pytest.param({"account_id": "X" * 65}, "account_id", "longer than 64", id="id-too-long"),
    pytest.param({"balance": "12,50"}, "balance", "not a plain decimal", id="balance-comma"),
    pytest.param({"balance": "ten"}, "balance", "not a plain decimal", id="balance-text"),
    pytest.param({"balance": "1e3"}, "balance", "not a plain decimal", id="balance-exponent"),
    pytest.param({"balance": "NaN"}, "balance", "not a plain decimal", id="balance-nan"),
    pytest.param({"balance": "-5.00"}, "balance", "is negative", id="balance-negative"),
    pytest.param({"balance": "10.123"}, "balance", "3 decimals but USD has 2", id="balance-dp"),
    pytest.param(
        {"balance": "1.5", "currency": "JPY"}, "balance", "1 decimals but JPY has 0", id="jpy-dp"
    ),
    pytest.param({"currency": "XYZ"}, "currency", "not an ISO 4217", id="currency-unknown"),
    pytest.param({"currency": "dollars"}, "currency", "not an ISO 4217", id="currency-word"),
    pytest.param(
        {"due_date": "2026-13-01"},
        "due_date",
        "'2026-13-01' is not a date (YYYY-MM-DD)",
        id="due-month-13",
    ),
    pytest.param({"due_date": "01/04/2026"}, "due_date", "is not a date", id="due-slashes"),
    pytest.param({"due_date": "20260401"}, "due_date", "is not a date", id="due-compact"),
    pytest.param({"due_date": "2026-02-30"}, "due_date", "is not a date", id="due-feb-30"),
    pytest.param(
        {"promise_to_pay_until": "next week"}, "promise_to_pay_until", "is not a date", id="ptp"
    ),
    pytest.param({"email": "jane.example.com"}, "email", "not a valid address", id="email-no-at"),
    pytest.param({"email": "jane@"}, "email", "not a valid address", id="email-no-domain"),
    pytest.param({"email": "jane@localhost"}, "email", "not a valid address", id="email-local"),
    pytest.param({"email": "ja ne@example.com"}, "email", "not a valid address", id="email-sp"),
    pytest.param({"phone": "12345"}, "phone", "not a valid number", id="phone-short"),
    pytest.param({"phone": "(617) 555-01234"}, "phone", "not a valid number", id="phone-long"),
    pytest.param({"phone": "call me"}, "phone", "is not a phone number", id="phone-text"),
    pytest.param({"phone": "+999 1234567"}, "phone", "no valid country code", id="phone-cc"),
    pytest.param({"timezone": "Mars/Olympus"}, "timezone", "not a known IANA", id="tz-mars"),
    pytest.param({"timezone": "../etc/passwd"}, "timezone", "not a known IANA", id="tz-path"),
    pytest.param({"country": "XX"}, "country", "not an ISO 3166 alpha-2", id="country-xx"),
    pytest.param({"country": "USA"}, "country", "not an ISO 3166 alpha-2", id="country-alpha3"),
    pytest.param({"country": "UK"}, "country", "did you mean GB?", id="country-uk"),
    pytest.param({"locale": "xx-YY"}, "locale", "not a known locale", id="locale-unknown"),
    pytest.param({"locale": "english"}, "locale", "not a known locale", id="locale-word"),
    pytest.param({"locale": "en-ZZ"}, "locale", "not a known locale", id="locale-zz"),
    pytest.param({"locale": "zh_CN.UTF-8"}, "locale", "not a known locale", id="locale-posix"),
    pytest.param({"jurisdiction": "US MA"}, "jurisdiction", "not a policy pack id", id="juris"),
    pytest.param({"status": "pending"}, "status", "not one of open, paid, closed", id="status"),
    *(
        pytest.param({flag: "maybe"}, flag, "'maybe' is not a boolean", id=f"flag-{flag}")
        for flag in FLAG_COLUMNS
    ),
]


@pytest.mark.parametrize(("changes", "field", "problem"), REJECTS)
def test_bad_value_rejects_its_row_only(
    tmp_path: Path, changes: dict[str, str], field: str, problem: str
) -> None:
    path = write(
        tmp_path / "a.csv", [good("A1"), good(**{"account_id": "A2", **changes}), good("A3")]
    )
    first, bad, last = read(path)
    assert isinstance(first, Parsed)
    assert first.line == 2
    assert isinstance(bad, Rejected)
    assert bad.line == 3
    assert bad.reason.startswith(f"{field}: "), bad.reason
    assert problem in bad.reason
    assert bad.raw["account_id"] == changes.get("account_id", "A2")
    assert isinstance(last, Parsed)
    assert last.line == 4


def test_every_problem_of_a_row_is_reported(tmp_path: Path) -> None:
    result = one(tmp_path / "a.csv", due_date="soon", email="nope", status="gone")
    assert isinstance(result, Rejected)
    assert [part.split(":")[0] for part in result.reason.split("; ")] == [
        "due_date",
        "email",
        "status",
    ]


def test_national_phone_without_country_or_default_region(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [good(country="", phone="(617) 555-0123")])
    [result] = read(path, default_region=None)
    assert isinstance(result, Rejected)
    assert result.reason == (
        "phone: '(617) 555-0123' has no valid country code (+...) and no country to read it with"
    )
    [ok] = read(path, default_region="US")
    assert isinstance(ok, Parsed)
    assert ok.values["phone"] == "+16175550123"


def test_phone_is_read_in_the_rows_country(tmp_path: Path) -> None:
    got = values(tmp_path / "a.csv", country="GB", phone="07400 123456", region="")
    assert got["phone"] == "+447400123456"


def test_wrong_number_of_fields(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "account_id,full_name,balance,currency,due_date\n"
        "A1,Jane,10,EUR\n"
        "A2,Jane,10,EUR,2026-01-31,surplus\n"
        "A3,Jane,10,EUR,2026-01-31\n",
        encoding="utf-8",
    )
    short, long, ok = read(path)
    assert isinstance(short, Rejected)
    assert (short.line, short.reason) == (2, "row: has 4 fields, the header has 5")
    assert short.raw["due_date"] == ""
    assert isinstance(long, Rejected)
    assert (long.line, long.reason) == (3, "row: has 6 fields, the header has 5")
    assert long.raw["extra_1"] == "surplus"
    assert isinstance(ok, Parsed)
    assert ok.line == 4


def test_duplicate_account_id(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv",
        [good("A1"), good("A2", due_date="bad"), good("A1"), good("A2"), good("A3")],
    )
    results = read(path)
    assert [type(r).__name__ for r in results] == [
        "Parsed",
        "Rejected",
        "Rejected",
        "Rejected",
        "Parsed",
    ]
    assert results[2].line == 4
    assert isinstance(results[2], Rejected)
    assert results[2].reason == "account_id: duplicate account_id, first seen on line 2"
    # The first A2 was itself rejected; a second A2 is still a duplicate, not a fix.
    assert isinstance(results[3], Rejected)
    assert results[3].reason == "account_id: duplicate account_id, first seen on line 3"


def test_multiline_quoted_field_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "account_id,full_name,balance,currency,due_date,address_line2\n"
        'A1,Jane,10,EUR,2026-01-31,"Flat 2\nBuilding B\r\nrear entrance"\n'
        "A2,Jane,10,EUR,never,\n"
        "\n"
        'A3,"Roe,\nJane",10,EUR,2026-01-31,\n'
        "A4,Jane,10,EUR,2026-01-31,\n",
        encoding="utf-8",
        newline="",
    )
    a1, a2, a3, a4 = read(path)
    assert isinstance(a1, Parsed)
    assert a1.line == 2
    assert a1.values["address_line2"] == "Flat 2\nBuilding B\r\nrear entrance"
    assert isinstance(a2, Rejected)
    assert a2.line == 5
    assert (a3.line, a4.line) == (7, 9)  # line 6 is blank
    assert isinstance(a3, Parsed)
    assert a3.values["full_name"] == "Roe,\nJane"


def test_leading_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    text = "account_id,full_name,balance,currency,due_date\r\nA1,Jane,10,EUR,2026-01-31\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    [result] = read(path)
    assert isinstance(result, Parsed)
    assert result.values["account_id"] == "A1"


def test_invalid_utf8_rejects_only_its_row(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"account_id,full_name,balance,currency,due_date\n"
        b"A1,Jos\xc3\xa9,10,EUR,2026-01-31\n"
        b"A2,Jos\xe9,10,EUR,2026-01-31\n"
        b"A3,\xe5\xbc\xa0\xe4\xbc\x9f,10,CNY,2026-01-31\n"
    )
    a1, a2, a3 = read(path)
    assert isinstance(a1, Parsed)
    assert a1.values["full_name"] == "José"
    assert isinstance(a2, Rejected)
    assert a2.line == 3
    assert a2.reason == r"full_name: 'Jos\xe9' is not valid UTF-8 text"
    assert isinstance(a3, Parsed)
    assert a3.values["full_name"] == "张伟"

    with RejectWriter.for_input(path) as rejects:
        rejects.write(a2)
    assert b"A2,Jos\xe9,10,EUR" in rejects.path.read_bytes()  # written back as read


def test_control_characters_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(
        b"account_id,full_name,balance,currency,due_date\n"
        b"A1,Jane\x00Roe,10,EUR,2026-01-31\n"
        b"A2,Jane\tRoe,10,EUR,2026-01-31\n"
    )
    bad, ok = read(path)
    assert isinstance(bad, Rejected)
    assert bad.reason == r"full_name: 'Jane\x00Roe' contains control characters"
    assert isinstance(ok, Parsed)


def test_oversized_field_is_a_csv_reject_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        "account_id,full_name,balance,currency,due_date\n"
        f"A1,{'x' * 200_000},10,EUR,2026-01-31\n"
        "A2,Jane,10,EUR,2026-01-31\n",
        encoding="utf-8",
    )
    bad, ok = read(path)
    assert isinstance(bad, Rejected)
    assert bad.line == 2
    assert bad.reason.startswith("row: not valid CSV")
    assert isinstance(ok, Parsed)
    assert ok.line == 3


# --------------------------------------------------------------------------- the file


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: no such file"):
        read_accounts(tmp_path / "nope.csv", default_timezone=DEFAULT_TZ)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.csv: the file is empty"):
        read_accounts(path, default_timezone=DEFAULT_TZ)


def test_blank_first_line(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("\naccount_id,full_name,balance,currency,due_date\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 1 is blank; expected a header row"):
        read_accounts(path, default_timezone=DEFAULT_TZ)


def test_header_only_gives_no_rows(tmp_path: Path) -> None:
    assert read(write(tmp_path / "a.csv", [])) == []


def test_header_missing_required_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [good()], header=[c for c in COLUMNS if c != "due_date"])
    with pytest.raises(InputError) as error:
        read_accounts(path, default_timezone=DEFAULT_TZ)
    assert str(error.value) == f"{path}: header: missing required column(s) due_date"


def test_header_unknown_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("account_id,full_name,balance,currency,due_date,phon,notes\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_accounts(path, default_timezone=DEFAULT_TZ)
    message = str(error.value)
    assert message.startswith(f"{path}: header: unknown column(s) ")
    assert "'phon' (did you mean phone?)" in message
    assert "'notes'" in message


def test_header_repeated_column(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("account_id,full_name,balance,currency,due_date,email,Email\n")
    with pytest.raises(InputError, match="repeated column"):
        read_accounts(path, default_timezone=DEFAULT_TZ)


def test_bad_defaults_are_input_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [good()])
    with pytest.raises(InputError, match="Mars/Olympus"):
        read_accounts(path, default_timezone="Mars/Olympus")
    with pytest.raises(InputError, match="default region"):
        read_accounts(path, default_timezone=DEFAULT_TZ, default_region="XX")


# --------------------------------------------------------------------------- reject file


def test_reject_file_columns_rows_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    header = ["Account_ID", "full_name", "balance", "currency", "due_date", "email"]
    path.write_text(
        ",".join(header) + "\n"
        "A1,Jane,10,EUR,2026-01-31,\n"
        'A2,"Roe, Jane",10,EUR,2026-02-31,x\n'
        "A3,Jane,10\n",
        encoding="utf-8",
    )
    with RejectWriter.for_input(path) as rejects:
        assert not rejects.path.exists()  # created lazily
        for result in read(path):
            if isinstance(result, Rejected):
                rejects.write(result)
    assert rejects.count == 2
    assert rejects.path == tmp_path / "accounts.rejects.csv"
    with rejects.path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["line", "reason", *header]
    assert rows[1][:2] == [
        "3",
        "due_date: '2026-02-31' is not a date (YYYY-MM-DD); email: 'x' is not a valid address "
        "(An email address must have an @-sign.)",
    ]
    assert rows[1][2:] == ["A2", "Roe, Jane", "10", "EUR", "2026-02-31", "x"]
    assert rows[2] == ["4", "row: has 3 fields, the header has 6", "A3", "Jane", "10", "", "", ""]

    # A rerun on a fixed file has no rejects: the stale reject file goes away.
    write(path, [good("A1"), good("A2")], header=list(COLUMNS))
    with RejectWriter.for_input(path) as rejects:
        for result in read(path):
            assert isinstance(result, Parsed)
    assert rejects.count == 0
    assert not rejects.path.exists()


def test_reject_writer_without_rejects_creates_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [good()])
    with RejectWriter.for_input(path) as rejects:
        pass
    assert not (tmp_path / "a.rejects.csv").exists()
    assert rejects.count == 0


# --------------------------------------------------------------------------- derived values


NO_ADDRESS = {"region": "", "postal_code": ""}


@pytest.mark.parametrize(
    ("changes", "zone", "source"),
    [
        pytest.param({"timezone": "Europe/Paris"}, "Europe/Paris", "explicit", id="explicit"),
        # The postal address comes before the phone: a mobile number may have moved.
        pytest.param({"phone": "(206) 555-0100"}, "America/New_York", "postal", id="zip-first"),
        pytest.param(
            {"postal_code": "79901", "region": "TX"}, "America/Denver", "postal", id="el-paso-zip"
        ),
        pytest.param({"postal_code": "", "region": "MA"}, "America/New_York", "region", id="state"),
        pytest.param(
            {"postal_code": "", "region": "TX", "phone": ""},
            "America/Chicago",
            "region_ambiguous",
            id="state-with-two-zones",
        ),
        pytest.param(
            {"phone": "(206) 555-0100", **NO_ADDRESS}, "America/Los_Angeles", "phone", id="us-area"
        ),
        pytest.param(
            {"phone": "(602) 555-0100", **NO_ADDRESS}, "America/Phoenix", "phone", id="arizona"
        ),
        pytest.param(
            {"country": "GB", "phone": "07400 123456", **NO_ADDRESS},
            "Europe/London",
            "phone",
            id="gb-mobile",
        ),
        pytest.param(
            {"country": "", "phone": "+86 138 0013 8000", **NO_ADDRESS},
            "Asia/Shanghai",
            "phone",
            id="cn-only",
        ),
        pytest.param(
            {"country": "DE", "phone": "", **NO_ADDRESS}, "Europe/Berlin", "country", id="de"
        ),
        pytest.param(
            {"country": "CN", "phone": "", **NO_ADDRESS}, "Asia/Shanghai", "country", id="cn"
        ),
        pytest.param(
            {"country": "JP", "phone": "", **NO_ADDRESS}, "Asia/Tokyo", "country", id="jp"
        ),
        pytest.param(
            {"country": "US", "phone": "", **NO_ADDRESS},
            "America/New_York",
            "country_ambiguous",
            id="us",
        ),
        pytest.param(
            {"country": "AU", "phone": "", **NO_ADDRESS},
            "Australia/Sydney",
            "country_ambiguous",
            id="au",
        ),
        pytest.param(
            {"country": "US", "phone": "+44 7400 123456", **NO_ADDRESS},
            "America/New_York",
            "country_ambiguous",
            id="foreign-phone-not-trusted",
        ),
        pytest.param(
            {"country": "", "phone": "", **NO_ADDRESS}, DEFAULT_TZ, "default", id="nothing-known"
        ),
    ],
)
def test_time_zone_resolution(
    tmp_path: Path, changes: dict[str, str], zone: str, source: str
) -> None:
    got = values(tmp_path / "a.csv", **changes)
    assert (got["timezone"], got["timezone_source"]) == (zone, source)


def test_phone_spanning_zones_in_a_multi_zone_country(tmp_path: Path) -> None:
    got = values(tmp_path / "a.csv", phone="(907) 555-0100", **NO_ADDRESS)  # Alaska: 2 zones
    assert got["timezone_source"] == "country_ambiguous"
    assert got["timezone"] in {"America/Anchorage", "America/Adak"}


def test_default_time_zone_is_the_callers(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", [good(country="", phone="")])
    [result] = read(path, default_timezone="Europe/Dublin")
    assert isinstance(result, Parsed)
    assert (result.values["timezone"], result.values["timezone_source"]) == (
        "Europe/Dublin",
        "default",
    )


@pytest.mark.parametrize(
    ("country", "region", "jurisdiction"),
    [
        ("US", "MA", "US-MA"),
        ("US", "ma", "US-MA"),
        ("US", "Massachusetts", "US-MA"),
        ("US", "WA", "US-WA"),
        ("US", "US-WA", "US-WA"),
        ("US", "NY", "US"),
        ("US", "", "US"),
        ("GB", "", "UK"),
        ("CN", "北京市", "CN"),
        ("DE", "", "default"),
        ("", "MA", "default"),
    ],
)
def test_jurisdiction_default(tmp_path: Path, country: str, region: str, jurisdiction: str) -> None:
    got = values(tmp_path / "a.csv", country=country, region=region, phone="")
    assert got["jurisdiction"] == jurisdiction


def test_explicit_jurisdiction_is_kept(tmp_path: Path) -> None:
    assert values(tmp_path / "a.csv", jurisdiction="US-WA")["jurisdiction"] == "US-WA"


@pytest.mark.parametrize(
    ("country", "locale", "expected"),
    [
        ("CN", "", "zh-CN"),
        ("TW", "", "zh-TW"),
        ("US", "", "en-US"),
        ("GB", "", "en-US"),
        ("", "", "en-US"),
        ("US", "es-US", "es-US"),
        ("GB", "en_GB", "en-GB"),
        ("CN", "zh-CN", "zh-CN"),
        ("CN", "zh_cn", "zh-CN"),
        ("", "es-419", "es-419"),
        ("TW", "zh-Hant-TW", "zh-Hant-TW"),
    ],
)
def test_locale_default_and_form(tmp_path: Path, country: str, locale: str, expected: str) -> None:
    got = values(tmp_path / "a.csv", country=country, locale=locale, phone="")
    assert got["locale"] == expected


# --------------------------------------------------------------------------- properties

_ID_TEXT = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], include_characters="\t\n\r"),
    min_size=1,
    max_size=64,
).filter(lambda s: s == s.strip() and s != "")
_CURRENCY_PLACES = {"USD": 2, "JPY": 0, "BHD": 3, "CNY": 2}


@st.composite
def _accounts(draw: st.DrawFn) -> list[tuple[str, str, Decimal]]:
    ids = draw(st.lists(_ID_TEXT, min_size=1, max_size=8, unique=True))
    rows = []
    for account_id in ids:
        currency = draw(st.sampled_from(sorted(_CURRENCY_PLACES)))
        amount = draw(
            st.decimals(
                min_value=0, max_value=10**12, places=_CURRENCY_PLACES[currency], allow_nan=False
            )
        )
        rows.append((account_id, currency, amount))
    return rows


@settings(max_examples=150, deadline=None)
@given(_accounts())
def test_round_trips_account_id_and_balance(accounts: list[tuple[str, str, Decimal]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.csv"
        rows = [
            good(account_id, balance=f"{amount:f}", currency=currency)
            for account_id, currency, amount in accounts
        ]
        results = read(write(path, rows))
    lines = [r.line for r in results]
    assert lines[0] == 2
    assert lines == sorted(set(lines))
    for result, (account_id, currency, amount) in zip(results, accounts, strict=True):
        assert isinstance(result, Parsed), result
        assert result.values["account_id"] == account_id
        assert result.values["balance_minor"] == int(amount.scaleb(_CURRENCY_PLACES[currency]))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.emails(),
        st.from_regex(r"[A-Za-z0-9._%+'!#-]{0,70}@[A-Za-z0-9.-]{0,30}", fullmatch=True),
        st.text(max_size=40),
    )
)
def test_email_fast_path_agrees_with_email_validator(text: str) -> None:
    try:
        expected: str | None = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = _normalised_email(text)
    except EmailNotValidError:
        got = None
    assert got == expected


def test_worker_processes_give_the_same_results(tmp_path: Path) -> None:
    rows = [good(f"A{n}", balance=f"{n}.{n % 100:02d}") for n in range(2500)]
    rows[10] = good("A10", due_date="never")
    rows[2000] = good("A1")
    path = write(tmp_path / "a.csv", rows)
    assert read(path, workers=2) == read(path)


def test_reader_is_lazy_and_streams(tmp_path: Path) -> None:
    # The iterator holds the file open and yields rows as it reads them.
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(good(f"A{n}") for n in range(3000))
    path = tmp_path / "a.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    results = read_accounts(path, default_timezone=DEFAULT_TZ, default_region="US")
    first = next(results)
    assert first.line == 2
    assert sum(1 for _ in results) == 2999


@pytest.mark.parametrize(
    ("text", "region", "e164"),
    [
        ("+16175550123", None, "+16175550123"),
        ("+1 (617) 555-0123", None, "+16175550123"),
        ("617-555-0123", "US", "+16175550123"),
        ("07911 123456", "GB", "+447911123456"),
        ("+86 138 0013 8000", None, "+8613800138000"),
        ("not a number", "US", None),
        ("+1 555", None, None),
    ],
)
def test_phone_e164_normalises_as_the_importer_stores_phones(
    text: str, region: str | None, e164: str | None
) -> None:
    assert phone_e164(text, region) == e164


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
cell_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)


@settings(deadline=None, max_examples=60)
@given(
    names=st.lists(
        st.one_of(
            cell_text,
            st.sampled_from(FORMULA_STARTS).flatmap(lambda s: cell_text.map(lambda t: s + t)),
            st.just('=HYPERLINK("http://evil.example","click me")'),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_reject_files_run_no_formula_and_lose_no_cell(names: list[str]) -> None:
    """CSV injection: a reject file is opened in a spreadsheet, so a cell sent to us as a
    formula (``=HYPERLINK(...)``) is written as text; stripping the one apostrophe the
    writer added gives back exactly what was read (nothing lost, issue 8)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accounts.csv"
        # Every row is rejected (bad due date), with the hostile text as its name.
        write(path, [good(f"A{i}", full_name=n, due_date="x") for i, n in enumerate(names)])
        read_back = [r for r in read(path) if isinstance(r, Rejected)]
        with RejectWriter.for_input(path) as rejects:
            for rejected in read_back:
                rejects.write(rejected)
        with rejects.path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
    assert len(rows) == len(read_back) == len(names)
    name_column = ["line", "reason", *COLUMNS].index("full_name")
    for row, rejected in zip(rows, read_back, strict=True):
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS)
        written = row[name_column]
        original = rejected.raw.get("full_name", "")
        assert written == (f"'{original}" if original.startswith(FORMULA_STARTS) else original)


hostile_cell = st.one_of(
    cell_text,
    st.text(alphabet=',"\n\r;=+-@\t ', max_size=12),  # quoting, separators, formulas
    st.just('=HYPERLINK("http://evil.example","x")'),
    st.just("x" * 5000),
)


@settings(deadline=None, max_examples=60)
@given(
    rows=st.lists(
        st.one_of(
            st.builds(lambda i: good(f"G{i}"), st.integers(0, 10**6)),
            st.dictionaries(st.sampled_from(list(COLUMNS)), hostile_cell, max_size=6).map(
                lambda cells: {**good("H"), **cells}
            ),
        ),
        max_size=12,
    ),
    bom=st.booleans(),
    latin1_row=st.booleans(),
)
def test_no_row_of_a_hostile_file_is_lost_or_invented(
    rows: list[dict[str, str]], bom: bool, latin1_row: bool
) -> None:
    """Issue 8, import fuzz: whatever the cells hold (embedded newlines and quotes, formula
    text, huge fields, a BOM, a row in another encoding), every record of the file comes
    back once, parsed or rejected with its line, in file order: nothing lost, nothing
    invented, nothing raised."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    records = len(rows)
    if latin1_row:
        data += "L1,Zoë Müller,10,EUR,2026-01-31\r\n".encode("latin-1")
        records += 1
    if bom:
        data = b"\xef\xbb\xbf" + data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accounts.csv"
        path.write_bytes(data)
        results = read(path)
    assert len(results) == records
    lines = [r.line for r in results]
    assert lines == sorted(lines) and len(set(lines)) == len(lines)
