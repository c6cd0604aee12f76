"""Retention: how long personal data is kept after the last collection activity.

Pure: a policy and ``now`` in, cut-off instants out. The store finds the accounts whose
last activity is older than a cut-off; this module says what "older" means.

Rule RETENTION.period (Reg F 12 CFR 1006.100(a): keep records that evidence compliance
for three years after the last collection activity on the debt; house rule HR-21: keep
nothing personal longer than the period configured per kind of record, never while the
debt is open, never under a legal hold).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class RecordKind(StrEnum):
    """What a purge removes, kind by kind (each with its own period)."""

    PERSONAL_DATA = "personal_data"  # the account's name, phone, email and postal address
    MESSAGE_CONTENT = "message_content"  # message bodies, subjects, recipients, letter PDFs
    AUDIT_DETAIL = "audit_detail"  # the details of audit records and the notes of holds


# Audit events that are not collection activity: the purge's own records and legal holds
# must not restart the clock they are measured by.
NOT_ACTIVITY = ("account_purged", "legal_hold_placed", "legal_hold_released")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    periods: dict[RecordKind, timedelta]

    def cutoff(self, kind: RecordKind, now: datetime) -> datetime:
        """Records of ``kind`` whose account's last activity is before this may go."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now - self.periods[kind]
