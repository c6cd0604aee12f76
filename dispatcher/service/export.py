"""Export every message with its status and template version (DESIGN.md export fields)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
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


def write_messages(
    rows: Iterable[Mapping[Any, Any]], out: IO[str], fmt: Literal["jsonl", "csv"]
) -> int:
    """Stream ``rows`` to ``out``; returns how many were written."""
    count = 0
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(export_record(row), ensure_ascii=False) + "\n")
            count += 1
        return count
    writer = csv.writer(out)
    writer.writerow(EXPORT_FIELDS)
    for row in rows:
        record = export_record(row)
        writer.writerow([csv_safe(record[name]) for name in EXPORT_FIELDS])
        count += 1
    return count
