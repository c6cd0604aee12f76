"""Purging personal data past its retention period (rules RETENTION.period, .purge,
.legal_hold), while the audit chain stays verifiable.

The chain is sealed first, so every audit detail about to be purged has its digest in
the chain; the purge then replaces details by a marker and keeps the digests, as it keeps
``body_sha256`` on messages. Each purged account gets an ``account_purged`` record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dispatcher.domain.retention import RecordKind, RetentionPolicy
from dispatcher.store.chain import AuditChainStore
from dispatcher.store.retention import Purged, RetentionStore, remove_files


@dataclass
class PurgeReport:
    """Per kind of record: what was (or, on a dry run, would be) purged."""

    now: datetime
    dry_run: bool
    kinds: dict[RecordKind, Purged] = field(default_factory=dict)
    files_removed: int = 0


def purge(
    store: RetentionStore,
    chain: AuditChainStore,
    policy: RetentionPolicy,
    now: datetime,
    *,
    dry_run: bool = False,
) -> PurgeReport:
    """Purge, kind by kind, the accounts idle since that kind's cut-off."""
    report = PurgeReport(now=now, dry_run=dry_run)
    if not dry_run:
        chain.seal()
    for kind in RecordKind:
        cutoff = policy.cutoff(kind, now)
        total = Purged()
        for ids in store.eligible(kind, cutoff):
            done = Purged(accounts=len(ids)) if dry_run else store.purge(kind, ids, now)
            if done.files:
                report.files_removed += remove_files(done.files)
            total = Purged(
                accounts=total.accounts + done.accounts,
                messages=total.messages + done.messages,
                audit_records=total.audit_records + done.audit_records,
                holds=total.holds + done.holds,
            )
        report.kinds[kind] = total
    if not dry_run:
        chain.seal()  # the purge's own records join the chain at once
    return report
