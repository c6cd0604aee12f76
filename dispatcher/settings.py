"""Service settings: ``config/settings.toml`` overridden by ``DISPATCHER_*`` variables.

Built once by :mod:`dispatcher.bootstrap`, never at import. Secrets (provider tokens,
database passwords inside the URL) belong in the environment or secret files, never in
the TOML file that is committed next to the code.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url

from dispatcher.domain.strategy import Strategy
from dispatcher.error import ConfigError

DEFAULT_SETTINGS_FILE = Path("config/settings.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreditorSettings(_Section):
    """Who the messages come from: printed in every message (creditor identity)."""

    name: str = "Acme Consumer Finance"
    phone: str = "+1 800 555 0100"
    email: str = "collections@acme-finance.example"
    website: str = "https://acme-finance.example"
    address_lines: tuple[str, ...] = (
        "100 Main Street",
        "Boston, MA 02110",
    )
    payment_url: str = "https://pay.acme-finance.example/a/{account_id}"
    opt_out_sms: str = "Reply STOP to opt out."
    unsubscribe_url: str = "https://acme-finance.example/unsubscribe/{account_id}"


class SinkSettings(_Section):
    """Where each channel delivers. ``file`` writes to ``directory`` (demo, dev, tests);
    ``twilio``, ``smtp`` and ``print_drop`` reach customers (see ``[twilio]``, ``[smtp]``
    and ``[print_drop]``)."""

    sms: Literal["file", "twilio"] = "file"
    email: Literal["file", "smtp"] = "file"
    letter: Literal["file", "print_drop"] = "file"
    directory: Path = Path("var/sink")


class SmtpSettings(_Section):
    """The SMTP server email goes through when ``sinks.email = "smtp"``.

    The password is read from the environment only (``DISPATCHER_SMTP__PASSWORD``); it is
    never written by ``dispatcher init``, never logged, never part of an error message.
    """

    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    # "starttls": plain connect then STARTTLS (port 587); "tls": implicit TLS (port 465);
    # "none": no encryption, for a relay on localhost or a test server only.
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr = Field(default=SecretStr(""), exclude=True)
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Connecting (and reconnecting after a dropped connection) is retried this many times,
    # a short backoff apart, before the message is handed back as a transient failure.
    connect_attempts: int = Field(default=3, ge=1, le=10)
    # Messages a second this server accepts from us (e.g. Amazon SES sandbox: 1; a
    # production SES account: its quota). 0: no limit of ours.
    messages_per_second: float = Field(default=0.0, ge=0)


class TwilioSettings(_Section):
    """Twilio Programmable Messaging, used when ``sinks.sms = "twilio"``.

    The auth token is read from the environment only (``DISPATCHER_TWILIO__AUTH_TOKEN``).
    Either ``messaging_service_sid`` or ``from_number`` names the sender.
    """

    account_sid: str = ""
    auth_token: SecretStr = Field(default=SecretStr(""), exclude=True)
    messaging_service_sid: str = ""
    from_number: str = ""
    status_callback_url: str = ""
    timeout_seconds: float = Field(default=15.0, gt=0)
    # Segments a second the sender (from_number or messaging service) may send, as the
    # carriers count them: US long code 1, toll-free 3 (verified), short code 100. A
    # messaging service with a pool of numbers: the pool's total. 0: no limit of ours.
    segments_per_second: float = Field(default=0.0, ge=0)
    # Development and tests only: send the API calls to this base URL (e.g. a local fake)
    # instead of https://api.twilio.com. Production leaves it empty.
    base_url: str = ""
    # The public address Twilio calls our webhooks at (scheme and host, e.g.
    # "https://dispatcher.example"): what Twilio signs, which behind a proxy is not what
    # the request says. Empty: the scheme and host of status_callback_url.
    webhook_base_url: str = ""


MailClass = Literal[
    "first_class", "certified", "certified_return_receipt", "registered", "standard"
]
"""Postal services a print house offers; each batch holds letters of one mail class."""


class PrintDropSettings(_Section):
    """The print house's drop folder, used when ``sinks.letter = "print_drop"``.

    ``directory`` is the folder the print house collects from (never created by us: a
    missing mount must not become a local folder nobody reads); ``work_directory`` is
    ours (staged letters, open batches, the archive of handed-over letters). Letters go
    by ``mail_class`` unless their stage is in ``mail_class_by_stage``: the formal final
    notice (``pre_legal``) goes certified, so its posting can be proven.
    """

    directory: Path = Path("var/print-drop")
    work_directory: Path = Path("var/print")
    mail_class: MailClass = "first_class"
    mail_class_by_stage: dict[str, MailClass] = {"pre_legal": "certified"}


class PlanSettings(_Section):
    batch_size: int = Field(default=2000, ge=1, le=50_000)
    # Processes that plan batches (read, decide, render, settle) while the planner's own
    # one writes (dispatcher/service/plan_pool.py); 1 = all in one process.
    workers: int = Field(default=1, ge=1, le=64)
    # Incremental planning (docs/PLANNING.md, "Reviews"): a plan looks at an account when
    # time or a change can alter its plan, and at least this often whatever happened.
    review_within_days: int = Field(default=7, ge=1, le=366)


class SendSettings(_Section):
    """Delivery retries: exponential backoff with jitter, attempts capped."""

    batch_size: int = Field(default=500, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base_seconds: float = Field(default=60.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    concurrency: int = Field(default=8, ge=1)
    # A message still `sending` this long after its claim was abandoned by a dead process.
    lease_seconds: float = Field(default=900.0, gt=0)
    # No late arrival (rule sms.validity.window): an SMS with less than this left of its
    # contact window is not handed over but deferred to the next window.
    sms_min_validity_seconds: float = Field(default=300.0, ge=1, le=36_000)


class ServeSettings(_Section):
    """`dispatcher serve`: its schedule, its HTTP side and its life cycle."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Planning runs on this cron (minute hour day month weekday, UTC; a sixth leading
    # field, if given, is seconds); missed runs after downtime are caught up once at start.
    plan_cron: str = "*/15 * * * *"
    # The send loop runs continuously; when nothing is due it looks again after this pause.
    send_idle_seconds: float = Field(default=1.0, gt=0, le=60)
    housekeeping_seconds: float = Field(default=60.0, gt=0)
    # On SIGTERM in-flight work may finish for this long before the process exits.
    grace_seconds: float = Field(default=30.0, gt=0)
    # /readyz fails when the last successful plan (by any instance) is older than this.
    ready_max_plan_age_seconds: float = Field(default=3600.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    # Where `serve` writes its process id, for `dispatcher reload` (systemd uses $MAINPID).
    pid_file: Path = Path("var/dispatcher.pid")

    @field_validator("plan_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        cron_trigger(value)
        return value


class WebSettings(_Section):
    """The people's pages of `dispatcher serve` (docs/WEB.md; rules HR-30..HR-35)."""

    # Session cookies carry the Secure flag: "auto" when the request came over HTTPS
    # (directly, or through a proxy that says so and is trusted by uvicorn), "always"
    # behind a TLS-terminating proxy that does not, "never" for plain-HTTP rehearsals.
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # HR-32: a login lasts at most this long, and ends sooner after this long unused.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    session_idle_minutes: float = Field(default=30.0, gt=0)
    # HR-33: failed logins per user name, and per client address, within the window (an
    # office behind one NAT address shares the second, so it is the larger).
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_client: int = Field(default=50, ge=1)
    login_window_seconds: float = Field(default=900.0, gt=0)
    # Search results shown at most (a narrower query finds the rest).
    search_limit: int = Field(default=50, ge=1, le=1000)


class AuditSettings(_Section):
    """The tamper-evident audit chain (rule AUDIT.chain, docs/COMPLIANCE.md)."""

    # Anchors (the chain's head, seq and hash) are appended here, outside the database,
    # so that a chain cut short is detected. Keep it on other storage than the database,
    # or ship it off the machine with the logs.
    anchor_file: Path = Path("var/audit-anchors.jsonl")
    # `serve` seals new audit records at every housekeeping run and writes an anchor at
    # most this often (and `dispatcher audit seal` writes one every time).
    anchor_seconds: float = Field(default=3600.0, gt=0)


class RetentionSettings(_Section):
    """How long personal data is kept after the last collection activity on an account
    that is no longer collected (rule RETENTION.period; Reg F 12 CFR 1006.100 asks for
    three years of records). `dispatcher retention purge` removes what is older."""

    personal_data_days: int = Field(default=1096, ge=1096)
    message_content_days: int = Field(default=1096, ge=1096)
    audit_detail_days: int = Field(default=1096, ge=1096)


class DatabaseSettings(_Section):
    """What happens when the database is out for a while: a PostgreSQL restart or
    failover, another SQLite writer holding the write lock (docs/OPERATIONS.md,
    "Database outages"). Plan, send and import runs are retried whole (each is
    idempotent); after the last attempt the run fails with one line naming the database."""

    # SQLite: how long a statement waits for another connection's write lock.
    busy_timeout_seconds: float = Field(default=10.0, ge=0, le=600)
    # Attempts of a whole plan/send/import run on an outage (1 = no retry).
    retry_attempts: int = Field(default=5, ge=1, le=50)
    # Longest wait between attempts (they start at half a second and double).
    retry_max_wait_seconds: float = Field(default=30.0, gt=0, le=600)


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expression: str) -> CronTrigger:
    """The APScheduler trigger for a crontab line in UTC: five fields as in crontab(5),
    or six with seconds first (for sub-minute schedules in rehearsals and tests)."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"a cron line has 5 fields (or 6 with seconds), not {len(fields)}")
    if len(fields) == 5:
        fields.insert(0, "0")
    second, minute, hour, day, month, weekday = fields
    # crontab counts weekdays from Sunday = 0 (or 7); APScheduler from Monday = 0. Names
    # mean the same to both, so numbers become names.
    weekday = re.sub(r"(?<![/\d])\d+", lambda m: _CRON_DAYS[int(m.group()) % 7], weekday)
    try:
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekday,
            timezone=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"not a valid cron line {expression!r}: {exc}") from None


class Settings(BaseSettings):
    """Everything the service needs to start. Relative paths are relative to the working dir."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCHER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str = "sqlite:///var/dispatcher.db"
    templates_dir: Path = Path("templates")
    strategy_file: Path = Path("config/strategy.toml")
    policies_dir: Path = Path("config/policies")
    default_timezone: str = "America/New_York"
    default_region: str = "US"
    creditor: CreditorSettings = CreditorSettings()
    sinks: SinkSettings = SinkSettings()
    smtp: SmtpSettings = SmtpSettings()
    twilio: TwilioSettings = TwilioSettings()
    print_drop: PrintDropSettings = PrintDropSettings()
    plan: PlanSettings = PlanSettings()
    send: SendSettings = SendSettings()
    serve: ServeSettings = ServeSettings()
    audit: AuditSettings = AuditSettings()
    web: WebSettings = WebSettings()
    retention: RetentionSettings = RetentionSettings()
    database: DatabaseSettings = DatabaseSettings()

    def secret_values(self) -> list[str]:
        """Every secret in force (tokens, passwords, the database URL's password), so
        logging can scrub them from anything it prints."""
        values = [self.smtp.password.get_secret_value(), self.twilio.auth_token.get_secret_value()]
        password = make_url(self.database_url).password
        if password:
            values.append(str(password))
        return [v for v in values if v]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file: ops override one value without editing config.
        return env_settings, init_settings, file_secret_settings


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items())
            + " }"
        )
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_settings_toml() -> str:
    """The built-in defaults as a settings file, for ``dispatcher init`` to write.

    Generated from :class:`Settings` itself so the example can never drift from the code.
    """
    defaults = Settings.model_construct().model_dump()
    top = [f"{k} = {_toml_value(v)}" for k, v in defaults.items() if not isinstance(v, dict)]
    lines = [
        "# dispatcher settings. Every key can be overridden by DISPATCHER_<KEY> (nested:",
        "# DISPATCHER_SEND__MAX_ATTEMPTS). Secrets belong in the environment, never here.",
        *top,
    ]
    for section, values in defaults.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a ConfigError that names the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot be read: {exc.strerror}") from None


def first_error(path: Path, exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    more = exc.error_count() - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(str(path), key, f"{error['msg']}{suffix}")


def load_settings(path: Path | None = None) -> Settings:
    """Load service settings; a missing default file means built-in defaults.

    A file that was asked for explicitly must exist. Errors name the file and the key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
    elif DEFAULT_SETTINGS_FILE.exists():
        path = DEFAULT_SETTINGS_FILE
        data = read_toml(path)
    for section, key in _SECRETS:
        if key in data.get(section, {}):
            raise ConfigError(
                str(path),
                f"{section}.{key}",
                f"secrets are read only from the environment "
                f"(DISPATCHER_{section.upper()}__{key.upper()}), never from a file",
            )
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise first_error(path or Path("environment"), exc) from None


# Keys that hold secrets: refused in settings files, so none is ever committed with config.
_SECRETS = (("smtp", "password"), ("twilio", "auth_token"))


def load_strategy(path: Path) -> Strategy:
    """Load and validate the collection strategy; errors name the file and the key."""
    try:
        return Strategy.model_validate(read_toml(path))
    except ValidationError as exc:
        raise first_error(path, exc) from None
