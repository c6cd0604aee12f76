"""Structured logs without personal data: one renderer for structlog and stdlib logging.

Logs leave the process (journald, a log shipper, a vendor), are read by people who must
not see debtors' contact data, and are kept longer than any of us remembers. So every
record — ours through structlog, and the stdlib records of uvicorn, APScheduler, httpx,
SQLAlchemy — goes through one :class:`Redactor` just before it is rendered:

* values under personal keys (``phone``, ``email``, ``recipient``, ``to``, ``full_name``,
  ``name``, ``address*``, ``city``, ``postal_code``, ...) are masked: a phone keeps its
  country code and last two digits (``+1***23``), an email its first character and domain
  (``j***@example.com``), a name its initials (``J. D.``), an address ``***``;
* values under secret keys (``password``, ``token``, ``authorization``, ...) become ``***``;
* every other string — event messages, exception text and tracebacks, stdlib messages
  with their ``%s`` arguments filled in — is scrubbed of phone numbers, email addresses,
  ``name='…'``-style pairs (reprs of our records) and ``Basic``/``Bearer`` credentials;
* the exact secret values given at start-up (auth tokens, passwords) become ``***``
  wherever they appear, before anything else, so no partial match can split one.

Nothing is configured at import: the daemon (and the CLI, if it wants) calls
:func:`configure_logging` once at start-up, e.g.
``configure_logging("INFO", json=True, secrets=settings.secret_values())``.
uvicorn must be started with ``log_config=None`` so it keeps these handlers.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import quote

import phonenumbers
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"

# Keys whose value is a way to reach or identify the debtor (lower-cased; ``address*``
# matches address, address_line1, ...).
CONTACT_KEYS = frozenset({"phone", "phone_number", "mobile", "email", "recipient", "to"})
NAME_KEYS = frozenset(
    {"full_name", "name", "first_name", "last_name", "customer_name", "debtor_name"}
)
ADDRESS_KEYS = frozenset({"city", "postal_code", "zip", "zip_code", "postcode", "street"})
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "auth_token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "set-cookie",
    }
)
# Keys structlog and logging own: never masked by name (their values are still scrubbed).
_OWN_KEYS = frozenset({"event", "level", "logger", "timestamp", "exception", "stack"})

# A phone number in free text: a "+", then at least 7 digits, possibly grouped by spaces,
# dots, dashes or parentheses. No upper bound and no boundary before the "+": digits run
# on both sides must not let a number through. Also the NANP national form (617) 555-0123.
_PHONE = re.compile(r"\+\(?\d(?:[ .\-()]{0,2}\d){6,}|\(?\b\d{3}\)?[ .\-]\d{3}[ .\-]\d{4}\b")
# An email address: the RFC 5322 atext characters and dots, "@", a host name.
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*"
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~\-]+@{_HOST}")
_HOST_ONLY = re.compile(rf"{_HOST}\.?")
# HTTP credentials: an Authorization header's value, and a bearer token anywhere.
_AUTH_HEADER = re.compile(
    r"""(\b(?:proxy-)?authorization['"]?\s*[:=]\s*['"]?(?:[A-Za-z]+\s+)?)[^\s'",;]+""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\bBearer\s+[A-Za-z0-9\-._~+/]+=*")
# ``email='jane@example.com'`` (reprs, dicts, JSON): masked by its key, before the
# address pattern would take ``email='jane`` for the local part.
_CONTACT_PAIR = re.compile(
    rf"""\b((?:{"|".join(sorted(CONTACT_KEYS))})['"]?\s*[=:]\s*)(['"])(.*?)\2""", re.IGNORECASE
)
_NAME_PAIR_KEYS = "|".join(sorted(NAME_KEYS | ADDRESS_KEYS | {r"address\w*"}))
# ``full_name='Jane Doe'`` (dataclass and pydantic reprs) and ``'full_name': 'Jane Doe'``
# (dict reprs, JSON): the value between the quotes.
_NAME_PAIR = re.compile(
    rf"""\b((?:{_NAME_PAIR_KEYS})['"]?\s*[=:]\s*)(['"])(.*?)\2""", re.IGNORECASE
)


def is_secret_key(key: str) -> bool:
    """``password``, ``auth_token``, ``smtp_password``, ``client_secret``, ..."""
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(("password", "_token", "_secret"))


def is_personal_key(key: str) -> bool:
    """``phone``, ``email``, ``recipient``, ``to``, names, ``address*``, ``city``, ..."""
    lowered = key.lower()
    return (
        lowered in CONTACT_KEYS
        or lowered in NAME_KEYS
        or lowered in ADDRESS_KEYS
        or lowered.startswith("address")
    )


def mask_phone(value: str) -> str:
    """``+16175550123`` → ``+1***23``: the country code says which rules apply, the last
    two digits let a person match a complaint, nothing more is needed in a log."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 3:
        return MASK
    last = digits[-2:]
    if value.lstrip().startswith("+"):
        code = _country_code(value)
        if code is None:
            return _safe(value, f"+{MASK}{last}")
        return _safe(value, f"+{code}{MASK}{last}")
    return _safe(value, f"{MASK}{last}")


def _country_code(value: str) -> int | None:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    code = parsed.country_code
    return int(code) if code else None


def mask_email(value: str) -> str:
    """``jane@example.com`` → ``j***@example.com``: the domain helps debugging delivery
    (a provider rejecting one domain), the local part identifies the person."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return MASK
    if not _HOST_ONLY.fullmatch(domain):
        domain = MASK  # not a host name: whatever it is, it is not ours to show
    if not local.strip("*"):
        return f"{MASK}@{domain}"  # masked already
    masked = f"{local[0]}{MASK}@{domain}"
    # A local part that was its first character then stars would come out unchanged.
    return masked if value not in masked else f"{MASK}@{domain}"


def mask_name(value: str) -> str:
    """``Jane Doe`` → ``J. D.``: enough to tell two log lines apart, not to identify."""
    initials = [part[0] + "." for part in value.split() if part[:1].isalpha()]
    return _safe(value, " ".join(initials) if initials else MASK)


def mask_contact(value: str) -> str:
    """A recipient may be an email, a phone number or (letters) a postal address."""
    if "@" in value:
        found = _EMAIL.search(value)  # "Jane Doe <jane@example.com>": the address alone
        return mask_email(found.group()) if found else MASK
    if sum(ch.isdigit() for ch in value) >= 3 and not any(ch.isalpha() for ch in value):
        return mask_phone(value)
    return MASK


def mask_value(key: str, value: str) -> str:
    """Mask ``value`` as what its key says it is (the caller checked the key is personal)."""
    if not value:
        return value
    lowered = key.lower()
    if lowered in NAME_KEYS:
        return mask_name(value)
    if lowered in CONTACT_KEYS:
        return mask_contact(value)
    return MASK  # addresses, cities, postal codes


def _safe(original: str, masked: str) -> str:
    """A mask that still contains the original (a one-letter name, an email whose local
    part is its first letter then stars) masks nothing: fall back to the plain mask."""
    return MASK if original and original in masked else masked


class Redactor:
    """A structlog processor: masks personal data and secrets in an event dict.

    Runs last before the renderer, on the records of structlog and of stdlib logging
    alike (see :func:`configure_logging`). Recurses into dicts, lists and tuples; any
    other object is turned into its ``repr`` first, because the renderer would print that
    repr unscrubbed (a dataclass of an account carries the name and phone).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s}
        # The forms a secret takes in URLs too; longest first, so a secret that contains
        # another is replaced whole.
        values |= {quote(s, safe="") for s in values}
        self.secrets = sorted(values, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {self.scrub(key): self._value(key, value) for key, value in event_dict.items()}

    def _value(self, key: str, value: Any) -> Any:
        lowered = key.lower()
        if is_secret_key(lowered):
            return MASK
        if lowered not in _OWN_KEYS and is_personal_key(lowered):
            return self._personal(key, value)
        return self._scrub_any(value)

    def _personal(self, key: str, value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, Mapping):
            return {self.scrub(str(k)): self._personal(key, v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._personal(key, v) for v in value]
        text = self._unsecret(value if isinstance(value, str) else repr(value))
        return mask_value(key, text)

    def _scrub_any(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            # Keys too: a mapping may be keyed by phone number or email.
            return {self.scrub(str(k)): self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub_any(v) for v in value]
        return self.scrub(repr(value))

    def _unsecret(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub(self, text: str) -> str:
        """Free text (a message, an exception, a traceback): secrets, then credentials,
        emails (before phones: an email's local part may be a phone number), phones and
        ``name='…'`` pairs."""
        text = self._unsecret(text)
        if not text:
            return text
        text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{MASK}", text)
        text = _BEARER.sub(f"Bearer {MASK}", text)
        text = _CONTACT_PAIR.sub(_mask_pair, text)
        if "@" in text:
            text = _EMAIL.sub(_mask_email_in_text, text)
        text = _PHONE.sub(lambda m: mask_phone(m.group()), text)
        return _NAME_PAIR.sub(_mask_pair, text)


def _mask_email_in_text(match: re.Match[str]) -> str:
    found = match.group()
    # Masked already (by key, or a repr of a masked value): masking again would only
    # swallow text before it (``email='j***@...`` is one run of address characters).
    return found if found.rpartition("@")[0].endswith(MASK) else mask_email(found)


def _mask_pair(match: re.Match[str]) -> str:
    prefix, quote_char, value = match.group(1), match.group(2), match.group(3)
    key = re.split(r"['\"\s=:]", prefix, maxsplit=1)[0]
    masked = mask_value(key, value) if value and value != MASK else value
    return f"{prefix}{quote_char}{masked}{quote_char}"


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool = True,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> Redactor:
    """Route structlog and stdlib logging through one masking renderer; call once at
    start-up (it replaces the root logger's handlers, so calling again reconfigures).

    ``json`` gives one JSON object per line (for log shippers); otherwise a console
    format for people at a terminal. ``secrets`` are exact values to replace with
    ``***`` anywhere (pass ``Settings.secret_values()``). ``stream`` defaults to stderr.
    Returns the redactor, which can also scrub text that leaves by other ways.
    """
    redactor = Redactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text here, so the redactor sees them (a renderer that
            # formats exc_info itself would print locals and messages unmasked).
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that install their own handlers would print around the redactor.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"):
        library = logging.getLogger(name)
        for old in list(library.handlers):
            library.removeHandler(old)
        library.propagate = True
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger used before this call must not keep the unmasked defaults.
        cache_logger_on_first_use=False,
    )
    return redactor
