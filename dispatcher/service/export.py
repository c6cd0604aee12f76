"""Export every message with its status and template version (DESIGN.md export fields),
and the audit records, as JSON lines or CSV: to a file (the CLI) or streamed (the web).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import IO, Any, Literal

from dispatcher.spreadsheet import csv_safe

EXPORT_FIELDS = (
    "message_id",
    "account_id",
    "stage",
    "step",
    "channel",
    "recipient",
    "template_id",
    "template_version",
    "scheduled_for",
    "sent_at",
    "status",
    "provider_message_id",
    "body_sha256",
    "hold_reason",
)


def export_record(row: Mapping[Any, Any]) -> dict[str, object]:
    """One message as exported: the contract's fields, times in ISO 8601 UTC."""
    record: dict[str, object] = {}
    for name in EXPORT_FIELDS:
        value = row[name]
        record[name] = value.isoformat() if isinstance(value, datetime) else value
    return record


# Audit records as exported: the record, its place in the tamper-evident chain, and the
# digest the chain covers of its detail (which stays when retention purges the detail).
AUDIT_EXPORT_FIELDS = (
    "id",
    "at",
    "event",
    "actor",
    "account_id",
    "message_id",
    "detail",
    "seq",
    "prev_hash",
    "hash",
    "detail_sha256",
)

Format = Literal["jsonl", "csv"]


def audit_record(row: Mapping[Any, Any]) -> dict[str, object]:
    """One audit record as exported; ``detail`` as the JSON object it holds."""
    record: dict[str, object] = {}
    for name in AUDIT_EXPORT_FIELDS:
        value = row[name]
        if name == "detail":
            # Not JSON (damaged or hand-written): exported as the text it is.
            with contextlib.suppress(TypeError, ValueError):
                value = json.loads(value)
        record[name] = value.isoformat() if isinstance(value, datetime) else value
    return record


def _lines(
    rows: Iterable[Mapping[Any, Any]],
    fmt: Format,
    fields: tuple[str, ...],
    to_record: Callable[[Mapping[Any, Any]], dict[str, object]],
) -> Iterator[str]:
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(to_record(row), ensure_ascii=False) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(cells: Iterable[object]) -> str:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(fields)
    for row in rows:
        record = to_record(row)
        yield line(csv_safe(_cell(record[name])) for name in fields)


def _cell(value: object) -> object:
    """A structured value (an audit detail) as one compact JSON cell."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return value


def message_lines(rows: Iterable[Mapping[Any, Any]], fmt: Format) -> Iterator[str]:
    """The export of ``rows`` (messages) line by line: a header first for CSV."""
    return _lines(rows, fmt, EXPORT_FIELDS, export_record)


def audit_lines(rows: Iterable[Mapping[Any, Any]], fmt: Format) -> Iterator[str]:
    """The export of ``rows`` (audit records) line by line: a header first for CSV."""
    return _lines(rows, fmt, AUDIT_EXPORT_FIELDS, audit_record)


def write_messages(rows: Iterable[Mapping[Any, Any]], out: IO[str], fmt: Format) -> int:
    """Stream ``rows`` to ``out``; returns how many were written."""
    count = 0
    for number, text in enumerate(message_lines(rows, fmt)):
        out.write(text)
        count = number if fmt == "csv" else number + 1
    return count
