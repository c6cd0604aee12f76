"""Cells of the CSV files we write for people (exports, reject files, print manifests).

Such files are opened in spreadsheets, which run a cell that starts like a formula
(``=HYPERLINK(...)``, ``+``, ``-``, ``@``, a tab or a carriage return): CSV injection
(OWASP). A customer's name or a field of a file someone sent us must never become one.
"""

from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    """The cell as text that no spreadsheet runs: a formula-like start is prefixed with
    an apostrophe (what spreadsheets read as "text", and drop when they save)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text
