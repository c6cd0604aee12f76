"""Wiring: the one place that builds settings, the engine, the store, templates and channels.

Nothing is built at import time; ``bootstrap()`` is called by the CLI (and later the
daemon) once at start-up, and tests call it with their own settings.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from dispatcher.channel import Channel
from dispatcher.channel.file import FileEmailSink, FileLetterSink, FileSmsSink
from dispatcher.channel.memory import MemoryChannel
from dispatcher.channel.print_drop import PrintDropSink
from dispatcher.channel.rate import rate_limit
from dispatcher.channel.smtp import SmtpEmailChannel, SmtpServer
from dispatcher.channel.twilio_sms import TwilioSmsChannel, build_twilio_client
from dispatcher.clock import SystemClock
from dispatcher.domain.retention import RecordKind, RetentionPolicy
from dispatcher.domain.retry import RetryPolicy
from dispatcher.domain.strategy import ChannelKind, Strategy
from dispatcher.error import ConfigError, InputError, TemplateError
from dispatcher.holiday import is_holiday
from dispatcher.policy_book import PolicyBook
from dispatcher.service.audit_log import AnchorFile
from dispatcher.service.planner import Planner
from dispatcher.service.sender import Sender
from dispatcher.service.template_catalog import TemplateCatalog
from dispatcher.service.template_lint import Severity, lint_directory
from dispatcher.service.timing import ContactTiming
from dispatcher.settings import Settings, load_settings, load_strategy
from dispatcher.store.chain import AuditChainStore
from dispatcher.store.engine import build_store
from dispatcher.store.ops import OpsStore
from dispatcher.store.outage import retrying
from dispatcher.store.retention import RetentionStore
from dispatcher.store.search import AccountSearch
from dispatcher.store.sql import SqlStore
from dispatcher.store.template_version import TemplateVersionStore
from dispatcher.store.user import UserStore
from dispatcher.template import TemplateSet
from dispatcher.template.context import Creditor
from dispatcher.template.letter import compile_pdf


def file_channels(settings: Settings) -> dict[ChannelKind, Channel]:
    """The channels ``[sinks]`` asks for: ``file`` by default, Twilio and SMTP when set.

    Provider clients are built here and only here; a provider chosen without the settings
    it needs is a ConfigError naming the key.
    """
    sinks = settings.sinks
    directory = sinks.directory
    creditor = settings.creditor
    sms: Channel = FileSmsSink(directory)
    email: Channel = FileEmailSink(
        directory, sender_name=creditor.name, sender_address=creditor.email
    )
    if sinks.sms == "twilio":
        sms = twilio_channel(settings)
    if sinks.email == "smtp":
        email = smtp_channel(settings)
    letter: Channel = FileLetterSink(directory, compile_pdf)
    if sinks.letter == "print_drop":
        letter = print_drop_channel(settings)
    return {
        ChannelKind.SMS: sms,
        ChannelKind.EMAIL: email,
        ChannelKind.LETTER: letter,
    }


def print_drop_channel(settings: Settings) -> PrintDropSink:
    drop = settings.print_drop
    return PrintDropSink(
        drop.directory,
        drop.work_directory,
        compile_pdf,
        mail_class=drop.mail_class,
        mail_class_by_stage=drop.mail_class_by_stage,
    )


def twilio_channel(settings: Settings) -> TwilioSmsChannel:
    tw = settings.twilio
    where = "settings (sinks.sms = twilio)"
    if not tw.account_sid:
        raise ConfigError(where, "twilio.account_sid", "is required")
    if not tw.auth_token.get_secret_value():
        raise ConfigError(where, "twilio.auth_token", "set DISPATCHER_TWILIO__AUTH_TOKEN")
    if not (tw.messaging_service_sid or tw.from_number):
        raise ConfigError(where, "twilio.messaging_service_sid", "set it or twilio.from_number")
    if settings.send.lease_seconds <= 2 * tw.timeout_seconds:
        # Reconciliation takes "not at Twilio" to mean "never arrived" only when no
        # request of the interrupted worker can still be under way.
        raise ConfigError(
            where,
            "send.lease_seconds",
            f"must be more than twice twilio.timeout_seconds ({tw.timeout_seconds:g})",
        )
    client = build_twilio_client(
        tw.account_sid, tw.auth_token, timeout_seconds=tw.timeout_seconds, base_url=tw.base_url
    )
    return TwilioSmsChannel(
        client,
        messaging_service_sid=tw.messaging_service_sid,
        from_number=tw.from_number,
        status_callback_url=tw.status_callback_url,
        rate=rate_limit(tw.segments_per_second),
    )


def smtp_channel(settings: Settings) -> SmtpEmailChannel:
    smtp = settings.smtp
    if smtp.username and not smtp.password.get_secret_value():
        raise ConfigError(
            "settings (sinks.email = smtp)", "smtp.password", "set DISPATCHER_SMTP__PASSWORD"
        )
    server = SmtpServer(
        host=smtp.host,
        port=smtp.port,
        security=smtp.security,
        username=smtp.username,
        password=smtp.password,
        timeout_seconds=smtp.timeout_seconds,
        connect_attempts=smtp.connect_attempts,
    )
    return SmtpEmailChannel(
        server,
        sender_name=settings.creditor.name,
        sender_address=settings.creditor.email,
        rate=rate_limit(smtp.messages_per_second),
    )


_T = TypeVar("_T")


@dataclass
class App:
    """The wired application: what every entry point works with."""

    settings: Settings
    store: SqlStore
    channels: Mapping[ChannelKind, Channel] = field(default_factory=dict)

    @cached_property
    def strategy(self) -> Strategy:
        return load_strategy(self.settings.strategy_file)

    @cached_property
    def templates(self) -> TemplateSet:
        return TemplateSet.load(self.settings.templates_dir)

    @cached_property
    def creditor(self) -> Creditor:
        c = self.settings.creditor
        return Creditor(
            name=c.name,
            phone=c.phone,
            email=c.email,
            website=c.website,
            address_lines=c.address_lines,
            payment_url=c.payment_url,
            opt_out_sms=c.opt_out_sms,
            opt_out_email_url=c.unsubscribe_url,
        )

    @cached_property
    def policies(self) -> PolicyBook:
        return PolicyBook.load(self.settings.policies_dir)

    @cached_property
    def timing(self) -> ContactTiming:
        return ContactTiming(self.policies, is_holiday)

    def reload(self) -> None:
        """Load strategy, policy packs and templates again: all of them or none.

        What the service does on SIGHUP. Anything unusable (a parse error, a template
        that fails the lint: unknown variable, missing disclosure, SMS over its segment
        limit) raises, and the configuration in force stays as it was. Plans and sends
        already running keep the objects they started with.
        """
        strategy = load_strategy(self.settings.strategy_file)
        policies = PolicyBook.load(self.settings.policies_dir)
        templates, findings = lint_directory(
            self.settings.templates_dir, strategy, policies, creditor=self.creditor
        )
        errors = [f for f in findings if f.severity is Severity.ERROR]
        if templates is None or errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise TemplateError(f"{first.location}: {first.rule}: {first.message}{more}")
        self.__dict__.update(
            strategy=strategy,
            policies=policies,
            templates=templates,
            timing=ContactTiming(policies, is_holiday),
        )

    @cached_property
    def audit_chain(self) -> AuditChainStore:
        return AuditChainStore(self.store.engine)

    @cached_property
    def anchors(self) -> AnchorFile:
        return AnchorFile(self.settings.audit.anchor_file)

    @cached_property
    def ops(self) -> OpsStore:
        """The ops pages' reads (a day's run, failures, sends per hour) and retries."""
        return OpsStore(self.store.engine)

    @cached_property
    def users(self) -> UserStore:
        """Web users, sessions and login attempts (docs/WEB.md)."""
        return UserStore(self.store.engine)

    @cached_property
    def search(self) -> AccountSearch:
        """Account search by id, name, email, phone (substring; trigram indexes)."""
        return AccountSearch(self.store.engine)

    @cached_property
    def retention(self) -> RetentionStore:
        return RetentionStore(self.store.engine)

    @property
    def retention_policy(self) -> RetentionPolicy:
        r = self.settings.retention
        return RetentionPolicy(
            {
                RecordKind.PERSONAL_DATA: timedelta(days=r.personal_data_days),
                RecordKind.MESSAGE_CONTENT: timedelta(days=r.message_content_days),
                RecordKind.AUDIT_DETAIL: timedelta(days=r.audit_detail_days),
            }
        )

    @cached_property
    def catalog(self) -> TemplateCatalog:
        """Template versions and four-eyes approval, on the application's database."""
        return TemplateCatalog(
            TemplateVersionStore(self.store.engine),
            self.settings.templates_dir,
            # Read afresh each time: a sync must see the files as they are now.
            disk=lambda: TemplateSet.load(self.settings.templates_dir),
            strategy=lambda: self.strategy,
            policies=lambda: self.policies,
            creditor=self.creditor,
        )

    def planner(self, now: datetime | None = None) -> Planner:
        """A planner that renders only the approved version of each template (HR-12).

        The approved versions are read from the database each time (compiled once per
        set of approved hashes), so an approval counts from the next plan, and the files
        on disk (drafts until approved) change nothing that is sent. ``now`` stamps a
        first-use bootstrap of the catalog (default: the wall clock).
        """
        approved = self.catalog.approved(now or SystemClock().now())
        return Planner(
            self.store,
            approved.templates,
            self.strategy,
            self.creditor,
            self.timing,
            batch_size=self.settings.plan.batch_size,
            catalogued=approved.known,
            workers=self.settings.plan.workers,
            review_within=timedelta(days=self.settings.plan.review_within_days),
        )

    def sender(self) -> Sender:
        send = self.settings.send
        pattern = self.settings.creditor.unsubscribe_url
        return Sender(
            self.store,
            self.channels,
            RetryPolicy(send.max_attempts, send.backoff_base_seconds, send.backoff_max_seconds),
            self.timing,
            self.strategy,
            batch_size=send.batch_size,
            concurrency=send.concurrency,
            unsubscribe_url=lambda account_id: pattern.format(account_id=account_id),
            lease=timedelta(seconds=send.lease_seconds),
            min_validity=timedelta(seconds=send.sms_min_validity_seconds),
        )

    def outlasting(
        self, call: Callable[[], _T], doing: str, notify: Callable[[str], None] | None = None
    ) -> _T:
        """Run a whole idempotent run (a plan, a send pass, an import) through a database
        outage: retried as ``[database]`` says, then one clear StoreUnavailable naming the
        database (docs/OPERATIONS.md, "Database outages")."""
        db = self.settings.database
        return retrying(
            call,
            engine=self.store.engine,
            doing=doing,
            attempts=db.retry_attempts,
            max_wait=db.retry_max_wait_seconds,
            notify=notify,
        )


def bootstrap(
    settings: Settings | None = None,
    *,
    settings_file: Path | None = None,
    channels: Mapping[ChannelKind, Channel] | None = None,
) -> App:
    """Build the application from settings (loaded from ``settings_file`` when not given)."""
    settings = settings or load_settings(settings_file)
    return App(
        settings=settings,
        store=build_store(
            settings.database_url, busy_timeout_seconds=settings.database.busy_timeout_seconds
        ),
        channels=channels if channels is not None else file_channels(settings),
    )


def simulation_copy(app: App, directory: Path) -> App:
    """The same application on a snapshot of its SQLite database, with in-memory channels.

    What ``simulate`` runs on: nothing it does can reach a customer or the real outbox.
    """
    url = make_url(app.settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise InputError("simulate works on the SQLite database (copying PostgreSQL is not built)")
    target = directory / "simulation.db"
    with sqlite3.connect(url.database) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    settings = app.settings.model_copy(update={"database_url": f"sqlite:///{target}"})
    return bootstrap(settings, channels={kind: MemoryChannel() for kind in ChannelKind})
