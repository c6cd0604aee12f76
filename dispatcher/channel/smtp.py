"""Email over SMTP with aiosmtplib: one connection kept open across a batch.

The MIME message is the one the file sink writes (:func:`~dispatcher.channel.file.compose_email`):
text and HTML parts, our own Message-ID (recorded as the provider message id) and the
RFC 8058 List-Unsubscribe headers.

Error mapping, at this edge:

- a 4xx reply, a refused or dropped connection, a timeout before the message was handed
  over: :class:`~dispatcher.error.TransientDelivery` (``smtp:451``, ``smtp:connect``,
  ``smtp:timeout``); nothing reached the server, so retrying cannot send it twice;
- a 5xx reply (e.g. ``550`` unknown recipient): :class:`~dispatcher.error.PermanentDelivery`
  with the server's reply in the message (``smtp:550``). A 550/551/553 refusal of the
  *recipient* (RCPT), unless its enhanced status code says policy rather than address
  (``5.7.x`` blocked, ``5.2.x`` mailbox full, ...), means the mailbox does not exist: the
  error carries the ``invalid_email`` hold, so later email to that address is held;
- the connection lost or timed out *after* the message body was sent but before the
  server answered: the server may or may not have taken it, so the outcome is unknown.
  Resending could mail the customer twice, so it becomes
  :class:`~dispatcher.error.UncertainDelivery` (code ``smtp:unknown``): the message goes
  to status ``unknown`` for a person to check, never an automatic retry. An SMTP server
  keeps no list we could look the message up in, so this channel is no Reconciler.

The password is a :class:`~pydantic.SecretStr`; it is only unwrapped to log in and never
appears in a message or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Literal

import aiosmtplib
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from dispatcher.channel import Outbound, Receipt
from dispatcher.channel.file import compose_email, sender_domain
from dispatcher.channel.rate import RateLimit
from dispatcher.error import DeliveryError, PermanentDelivery, TransientDelivery, UncertainDelivery

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to connect; built by bootstrap from ``[smtp]`` settings."""

    host: str
    port: int
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr | None = None
    timeout_seconds: float = 30.0
    connect_attempts: int = 3
    tls_context: ssl.SSLContext | None = None


class _ConnectFailed(Exception):
    """A connection attempt failed in a way worth retrying at once (tenacity's trigger)."""


class _Dropped(Exception):
    """The connection failed before any of the message was handed over: safe to redo."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SmtpEmailChannel:
    """Delivers email through one SMTP server, reusing one connection for many messages.

    Messages are sent one at a time over the connection (SMTP has one transaction in
    flight per connection); callers may call :meth:`deliver` concurrently. Call
    :meth:`close` when the batch or the process ends.
    """

    def __init__(
        self,
        server: SmtpServer,
        *,
        sender_name: str,
        sender_address: str,
        rate: RateLimit | None = None,
    ) -> None:
        self.server = server
        # Messages a second through this server (e.g. SES sandbox: 1); None: no limit.
        self.rate = rate
        self.sender_address = sender_address
        self.sender = formataddr((sender_name, sender_address))
        self.domain = sender_domain(sender_address)
        self._smtp: aiosmtplib.SMTP | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self.connections_opened = 0

    def compose(self, message: Outbound) -> EmailMessage:
        return compose_email(message, sender=self.sender, domain=self.domain)

    async def deliver(self, message: Outbound) -> Receipt:
        mail = self.compose(message)
        message_id = str(mail["Message-ID"])
        self._bind_loop()
        data = bytes(mail)
        if self.rate is not None:
            await self.rate.take()
        async with self._lock:
            reused = self._smtp is not None and self._smtp.is_connected
            smtp = await self._connected()
            try:
                await self._transaction(smtp, message.recipient, data)
            except _Dropped as dropped:
                if not reused:
                    raise _transient_from(dropped.cause) from None
                # The kept connection had gone stale (server idle timeout) before anything
                # of this message was handed over: reconnect and try once more.
                log.info("SMTP connection to %s dropped; reconnecting", self.server.host)
                smtp = await self._connected()
                try:
                    await self._transaction(smtp, message.recipient, data)
                except _Dropped as again:
                    raise _transient_from(again.cause) from None
        return Receipt(provider_message_id=message_id)

    def _bind_loop(self) -> None:
        """A connection belongs to the event loop that opened it; each ``asyncio.run``
        (one per CLI command) starts a new loop, so a connection from an earlier one is
        dropped and a fresh lock made."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._smtp is not None:
                # Its loop may be closed already; the socket goes with it.
                with contextlib.suppress(RuntimeError):
                    self._smtp.close()
                self._smtp = None
            self._loop = loop
            self._lock = asyncio.Lock()

    async def close(self) -> None:
        """Say QUIT and close the connection; safe to call when none is open."""
        self._bind_loop()
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is None or not smtp.is_connected:
                return
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    async def _connected(self) -> aiosmtplib.SMTP:
        """The open connection, or a new one (retried a few times, a short backoff apart)."""
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        self._smtp = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.server.connect_attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(_ConnectFailed),
                reraise=True,
            ):
                with attempt:
                    self._smtp = await self._connect()
        except _ConnectFailed as exc:
            cause = exc.__cause__
            raise _transient_from(cause if cause is not None else exc) from cause
        assert self._smtp is not None
        return self._smtp

    async def _connect(self) -> aiosmtplib.SMTP:
        server = self.server
        smtp = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            timeout=server.timeout_seconds,
            use_tls=server.security == "tls",
            start_tls=server.security == "starttls",
            tls_context=server.tls_context,
        )
        try:
            await smtp.connect()
            if server.username:
                password = server.password.get_secret_value() if server.password else ""
                await smtp.login(server.username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            # Wrong credentials fail every message alike: a configuration problem that
            # ops fix, after which the queued messages should still go.
            raise TransientDelivery(
                f"SMTP login to {server.host} refused: {exc.code} {exc.message}",
                code=f"smtp:{exc.code}",
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            log.warning("SMTP connect to %s:%s failed: %s", server.host, server.port, exc)
            raise _ConnectFailed() from exc
        self.connections_opened += 1
        return smtp

    async def _transaction(self, smtp: aiosmtplib.SMTP, recipient: str, data: bytes) -> None:
        options = ["BODY=8BITMIME"] if smtp.supports_extension("8bitmime") else []
        handed_over = False
        try:
            await smtp.mail(self.sender_address, options=options)
            await smtp.rcpt(recipient)
            handed_over = True
            await smtp.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset(smtp)
            recipient_refused = isinstance(exc, aiosmtplib.SMTPRecipientRefused)
            raise _from_reply(exc.code, exc.message, recipient=recipient_refused) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._drop(smtp)
            if handed_over:
                raise UncertainDelivery(
                    f"SMTP connection to {self.server.host} lost after the message was sent "
                    f"({type(exc).__name__}); the server may have accepted it: check before "
                    "resending",
                    code="smtp:unknown",
                ) from None
            raise _Dropped(exc) from None

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a refused command so the connection can carry the next message."""
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._drop(smtp)

    def _drop(self, smtp: aiosmtplib.SMTP) -> None:
        smtp.close()
        if self._smtp is smtp:
            self._smtp = None


# Replies to RCPT that say the mailbox does not exist (RFC 5321 §4.2.2 and §3.4).
MAILBOX_GONE = frozenset({550, 551, 553})


def _from_reply(code: int, reply: str, *, recipient: bool = False) -> DeliveryError:
    text = f"SMTP server replied {code} {reply}".strip()
    if 500 <= code < 600:
        hold = "invalid_email" if recipient and mailbox_gone(code, reply) else None
        return PermanentDelivery(text, code=f"smtp:{code}", hold=hold)
    return TransientDelivery(text, code=f"smtp:{code}")


def mailbox_gone(code: int, reply: str) -> bool:
    """Whether a permanent refusal of the recipient means the address does not exist.

    550/551/553 to RCPT do, unless the reply's enhanced status code (RFC 3463) names
    another cause: only ``5.1.x`` (addressing) counts then; ``5.7.1`` (policy, a block
    list) or ``5.2.2`` (mailbox full) are about this message or our server, not the
    address, and must not hold the customer's email for good (house rule HR-3).
    """
    if code not in MAILBOX_GONE:
        return False
    enhanced = reply.split(maxsplit=1)[0] if reply else ""
    parts = enhanced.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return parts[0] == "5" and parts[1] == "1"
    return True


def _transient_from(exc: BaseException) -> TransientDelivery:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # A 4xx/5xx greeting (e.g. 421 too busy): the server turned the connection away.
        return TransientDelivery(
            f"SMTP server turned the connection away: {exc.code} {exc.message}",
            code=f"smtp:{exc.code}",
        )
    kind = "timeout" if isinstance(exc, TimeoutError) else "connect"
    return TransientDelivery(f"SMTP {kind} error: {type(exc).__name__}: {exc}", code=f"smtp:{kind}")
