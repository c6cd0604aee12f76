"""The tables. Balances are integer minor units (exact on every database)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from dispatcher.store.column import UtcDateTime


class AccountBase(SQLModel):
    """Columns of the accounts CSV contract (DESIGN.md), after validation."""

    account_id: str = Field(primary_key=True, max_length=64)
    full_name: str
    balance_minor: int = Field(sa_type=BigInteger)
    currency: str = Field(max_length=3)
    due_date: date = Field(index=True)
    # Indexed: caps find a person's other accounts by phone or email.
    phone: str | None = Field(default=None, index=True)
    email: str | None = Field(default=None, index=True)
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, max_length=2)
    timezone: str
    timezone_source: str = "explicit"
    locale: str = "en-US"
    jurisdiction: str = "default"
    status: str = "open"
    dispute: bool = False
    bankruptcy: bool = False
    cease_and_desist: bool = False
    deceased: bool = False
    do_not_contact: bool = False
    opt_out_sms: bool = False
    opt_out_email: bool = False
    promise_to_pay_until: date | None = None
    assigned_to: str | None = None


class AccountRow(AccountBase, table=True):
    __tablename__ = "account"

    cycle: int = 1
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    # Retention (dispatcher.domain.retention): a legal hold blocks every purge of the
    # account; purged_at says when its personal data was removed past retention.
    legal_hold: bool = False
    legal_hold_note: str | None = None
    purged_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    # Incremental planning (docs/PLANNING.md, "Reviews"): the planner looks at the account
    # again from ``review_at`` on (NULL: only after a change), and at once when its
    # configuration is not ``review_key``. Every change that can alter the account's plan
    # clears ``review_key`` and bumps ``review_seq``; a plan records its review only if
    # ``review_seq`` is still what it read with the account.
    review_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    review_key: str | None = None
    review_seq: int = 0


class MessageRow(SQLModel, table=True):
    """The outbox: one row per idempotency key, from its first decision to its end."""

    __tablename__ = "message"
    __table_args__ = (
        Index("ix_message_due", "status", "scheduled_for"),
        Index("ix_message_account", "account_id", "cycle"),
        # Provider status callbacks find their message by the provider's id.
        Index("ix_message_provider", "provider_message_id"),
    )

    message_id: str = Field(primary_key=True, max_length=32)
    idempotency_key: str = Field(unique=True)
    account_id: str = Field(foreign_key="account.account_id")
    cycle: int
    stage: str
    step: str
    channel: str
    status: str
    hold_reason: str | None = None
    rule_id: str | None = None
    hold_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    dpd: int
    locale: str | None = None
    recipient: str | None = None
    template_id: str | None = None
    template_version: str | None = None
    template_sha256: str | None = None
    subject: str | None = None
    body: str | None = Field(default=None, sa_column=Column(Text))
    body_html: str | None = Field(default=None, sa_column=Column(Text))
    body_sha256: str | None = None
    scheduled_for: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    provider_message_id: str | None = None
    artifact_path: str | None = None
    last_error: str | None = None
    # What the provider reported after hand-over (status callbacks): the message stays
    # `sent` (it was handed over); this says whether it reached the handset.
    delivery_status: str | None = None
    delivery_error: str | None = None
    delivery_updated_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))


class AuditRow(SQLModel, table=True):
    """One audit record: an event (past tense), about an account and maybe a message."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_account", "account_id", "id"),
        # Unique: two sealers can never fork the chain. The sealer also finds what is not
        # chained yet (seq IS NULL: NULLs do not collide) on it.
        Index("ix_audit_seq", "seq", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    event: str
    actor: str
    account_id: str | None = None
    # Not indexed: a message's records are found by its account (ix_audit_account);
    # an index on these hashes costs every plan a rewrite of most of its pages.
    message_id: str | None = None
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # The tamper-evident chain (dispatcher.domain.audit_chain), set when the record is sealed.
    seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)
    # What the chain covers of ``detail``: it stays when the detail is purged.
    detail_sha256: str | None = Field(default=None, max_length=64)


class HoldRow(SQLModel, table=True):
    """A hold placed on purpose, kept for ever: lifting sets ``lifted_at``, never deletes.

    ``scope`` "person" extends it to every account sharing the phone or email.
    """

    __tablename__ = "hold"
    __table_args__ = (Index("ix_hold_account", "account_id", "lifted_at"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: str = Field(foreign_key="account.account_id")
    reason: str
    channel: str | None = None
    scope: str = "account"
    starts_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    ends_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    note: str = ""
    source: str
    created_by: str
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    lifted_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    lifted_by: str | None = None
    lift_note: str | None = None


class RunRow(SQLModel, table=True):
    """One scheduled run (plan, housekeeping) by one service instance.

    Shared by every instance, so /readyz and the ops pages can tell when planning last
    succeeded anywhere, and who did it.
    """

    __tablename__ = "run"
    __table_args__ = (Index("ix_run_kind", "kind", "status", "finished_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    instance: str
    started_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    status: str = "running"
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))


class TemplateVersionRow(SQLModel, table=True):
    """One exact wording of one template (channel, id, locale), named by its content hash.

    Kept for ever with the full source, so the approved wording can be rendered after the
    file on disk changed, and an auditor can read what any message was made from. States:
    draft → approved → retired, or draft → rejected (``dispatcher.domain.template_version``).
    The partial unique index lets at most one version of a template be approved.
    """

    __tablename__ = "template_version"
    __table_args__ = (
        UniqueConstraint(
            "channel", "template_id", "locale", "sha256", name="uq_template_version_sha256"
        ),
        Index(
            "uq_template_version_approved",
            "channel",
            "template_id",
            "locale",
            unique=True,
            sqlite_where=text("state = 'approved'"),
            postgresql_where=text("state = 'approved'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str
    template_id: str
    locale: str
    # SHA-256 hex of the file bytes (email: text part then HTML part): the version.
    sha256: str = Field(max_length=64)
    label: str  # the front matter ``version``: a name for people, not the identity
    source: str = Field(sa_column=Column(Text, nullable=False))
    source_html: str | None = Field(default=None, sa_column=Column(Text))  # email HTML part
    author: str
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    state: str = "draft"
    approved_by: str | None = None
    approved_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    rejected_by: str | None = None
    rejected_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    retired_by: str | None = None
    retired_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))
    note: str | None = Field(default=None, sa_column=Column(Text))  # approval or rejection
    retire_note: str | None = Field(default=None, sa_column=Column(Text))


class WebUserRow(SQLModel, table=True):
    """A person who logs in to the web pages: argon2 password hash, roles (comma-separated
    ``dispatcher.domain.access.Role`` names). Never deleted (audit records name them):
    ``disabled_at`` ends every login."""

    __tablename__ = "web_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    password_hash: str
    roles: str = ""
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    created_by: str
    password_changed_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime))


class WebSessionRow(SQLModel, table=True):
    """A server-side login session. Only the SHA-256 of the cookie's random token is kept,
    so a copy of the database logs nobody in. ``csrf_token`` is the synchronizer token of
    every form of this session."""

    __tablename__ = "web_session"
    __table_args__ = (Index("ix_web_session_user", "user_id"),)

    token_sha256: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="web_user.id")
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    last_seen_at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    client: str | None = None


class LoginAttemptRow(SQLModel, table=True):
    """One login attempt, kept for the rate limit (rule HR-33) and for investigations."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_name", "name", "at"),
        Index("ix_login_attempt_client", "client", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UtcDateTime, nullable=False))
    name: str
    client: str
    succeeded: bool
