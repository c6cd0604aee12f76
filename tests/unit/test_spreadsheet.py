"""Rule CSV.no_formula: a cell of a CSV we write (export, reject file, print manifest)
never starts like a spreadsheet formula."""

from __future__ import annotations

import csv
import io

import pytest

from dispatcher.service.export import EXPORT_FIELDS, write_messages
from dispatcher.spreadsheet import csv_safe


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (
            '=HYPERLINK("http://evil.example","click")',
            '\'=HYPERLINK("http://evil.example","click")',
        ),
        ("+1 617 555 0100", "'+1 617 555 0100"),
        ("-12.50", "'-12.50"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\tTAB", "'\tTAB"),
        ("\rCR", "'\rCR"),
        ("Jane = Doe", "Jane = Doe"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
def test_formula_like_cells_are_written_as_text(value: object, written: str) -> None:
    assert csv_safe(value) == written


def test_the_csv_export_neutralises_a_hostile_recipient() -> None:
    out = io.StringIO()
    row = dict.fromkeys(EXPORT_FIELDS) | {"message_id": "m1", "recipient": "=cmd|' /C calc'!A0"}

    write_messages([row], out, "csv")

    [record] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert record["recipient"] == "'=cmd|' /C calc'!A0"
