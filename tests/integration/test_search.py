"""Account search on SQLite (FTS5 trigram) and PostgreSQL (pg_trgm): the same answers,
substring matches in any case, phones however typed, and typed SQL harmless."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.bootstrap import App
from dispatcher.domain.search import search_terms
from tests.integration.test_pipeline import load, row

ROWS = [
    row(
        "ACC-1001",
        "2026-06-01",
        full_name="Jane Doe",
        phone="+16175550142",
        email="jane.doe@example.com",
    ),
    row(
        "ACC-1002",
        "2026-06-01",
        full_name="John Doerr",
        phone="+16175550199",
        email="jdoerr@mail.example",
    ),
    row(
        "ACC-2001",
        "2026-06-01",
        full_name="Zoë Ångström",
        email="zoe@example.org",
        phone="+12125550100",
    ),
    row(
        "ACC-3001",
        "2026-06-01",
        full_name="100% Legit_Co",
        email="legit@example.net",
        phone="+13125550111",
    ),
    row(
        "UK-1",
        "2026-06-01",
        full_name="Alan Brit",
        phone="+447911123456",
        email="alan@example.co.uk",
        country="GB",
        city="London",
        region="",
        postal_code="SW1A 1AA",
        timezone="Europe/London",
        locale="en-GB",
    ),
]


def ids(app: App, query: str, region: str = "US", limit: int = 50) -> list[str]:
    return sorted(r["account_id"] for r in app.search.find(search_terms(query, region), limit))


@pytest.fixture
def loaded(app: App, tmp_path: Path) -> App:
    load(app, tmp_path, ROWS)
    return app


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("doe", ["ACC-1001", "ACC-1002"]),  # in "Doe" and "Doerr": a substring, any case
        ("DOE", ["ACC-1001", "ACC-1002"]),
        ("jane doe", ["ACC-1001"]),  # every word must match
        ("doe jane", ["ACC-1001"]),  # in any order
        ("mail.exam", ["ACC-1002"]),  # email
        ("acc-100", ["ACC-1001", "ACC-1002"]),  # id
        ("ACC-2001", ["ACC-2001"]),
        ("ström", ["ACC-2001"]),  # beyond ASCII
        ("(617) 555-0142", ["ACC-1001"]),  # phone, however typed
        ("617.555.0142", ["ACC-1001"]),
        ("+1 617 555 01", ["ACC-1001", "ACC-1002"]),
        ("5550199", ["ACC-1002"]),
        ("07911 123456", ["UK-1"]),  # national number with its trunk 0, region GB
        ("nobody", []),
        ("do", []),  # too short for a substring index: nothing, not everything
    ],
)
def test_search_finds_by_id_name_email_and_phone(
    loaded: App, query: str, expected: list[str]
) -> None:
    region = "GB" if query.startswith("07") else "US"
    assert ids(loaded, query, region) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("' OR 1=1 --", []),
        ("'; DROP TABLE account; --", []),
        ('" OR "', []),
        ("%", []),
        ("%%%", []),
        ("___", []),
        ("100%", ["ACC-3001"]),  # a % typed is a character to find
        ("t_co", ["ACC-3001"]),  # so is a _
        ("doe*", []),  # FTS5 prefix syntax is text too
        ("NEAR(doe jane)", []),
        ("{full_name}: doe", []),
        ("doe OR zoe", []),  # no query language: three words that must all occur
    ],
)
def test_sql_and_query_syntax_typed_into_search_is_only_text(
    loaded: App, query: str, expected: list[str]
) -> None:
    assert ids(loaded, query) == expected
    assert loaded.store.count_accounts() == len(ROWS)  # and nothing happened to the table


def test_the_index_follows_changes_to_accounts(loaded: App, tmp_path: Path) -> None:
    renamed = {**ROWS[0], "full_name": "Janet Newname", "email": "janet@new.example"}
    load(loaded, tmp_path, [renamed], name="b.csv")
    assert ids(loaded, "newname") == ["ACC-1001"]
    assert ids(loaded, "janet@new") == ["ACC-1001"]
    assert ids(loaded, "doe") == ["ACC-1002"]  # the old name and email are gone
    # A re-import that changes nothing searched keeps the account findable once.
    load(loaded, tmp_path, [{**ROWS[1], "balance": "1.00"}], name="c.csv")
    assert ids(loaded, "doerr") == ["ACC-1002"]


def test_the_result_list_stops_at_the_limit_with_the_exact_id_first(
    app: App, tmp_path: Path
) -> None:
    load(
        app, tmp_path, [row(f"SAME-{i:03d}", "2026-06-01", full_name="Sam Same") for i in range(30)]
    )
    found = app.search.find(search_terms("SAME-017"), 5)
    assert [r["account_id"] for r in found][:1] == ["SAME-017"]
    assert len(app.search.find(search_terms("sam same"), 10)) == 10
