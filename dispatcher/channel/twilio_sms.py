"""SMS through Twilio Programmable Messaging, with the official ``twilio`` client.

The client is synchronous (``requests``), so each call runs in a worker thread. The
Message SID Twilio returns is the provider message id. A message with ``valid_for`` is
created with ``validity_period`` (whole seconds, 1..36000): Twilio drops it, error 30036,
rather than deliver it after the customer's contact window (rule ``sms.validity.window``).

Error mapping, at this edge (Twilio error codes: https://www.twilio.com/docs/api/errors):

============================================  ============================================
21211 invalid ``To``, 21614 not a mobile      PermanentDelivery ``twilio:21211`` / ``21614``,
                                              hold ``invalid_phone``
21610 recipient replied STOP                  PermanentDelivery ``twilio:21610``,
                                              hold ``opted_out_sms``
20429 / HTTP 429 too many requests            TransientDelivery ``twilio:20429``
HTTP 5xx                                      TransientDelivery ``twilio:<code>``
20003 / HTTP 401, 403 (credentials)           TransientDelivery (fixable by ops; then it goes)
any other 4xx                                 PermanentDelivery ``twilio:<code>``
no connection, connect timeout                TransientDelivery ``twilio:connection`` /
                                              ``twilio:timeout`` (nothing was sent)
no answer after the request went out          UncertainDelivery ``twilio:timeout`` /
(read timeout, connection lost)               ``twilio:connection`` (looked up later)
============================================  ============================================

Reconciliation (:meth:`TwilioSmsChannel.lookup`): a message whose hand-over was
interrupted is looked for in the account's Messages list, filtered by ``To``; a message
created after our claim, with our text, whose SID no other message of ours holds, is
ours. Twilio echoes no field of ours in a Message resource (the status callback URL,
which carries ``?mid=<message_id>`` for the webhooks, is not part of it), so the match is
by recipient, time and text. ``DateSent`` is not used as a filter: a message Twilio
accepted but still holds in its queue (a rate-limited sender) has no ``date_sent`` yet,
and must be found all the same.

The auth token is a :class:`~pydantic.SecretStr`, unwrapped only to build the client.
The client's own HTTP logging (which prints request and response bodies, i.e. phone
numbers and message text) goes to a logger held at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ConnectTimeout,
    Timeout,
)
from twilio.base.exceptions import (  # type: ignore[import-untyped]
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http import HttpClient  # type: ignore[import-untyped]
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]
from urllib3.exceptions import ConnectTimeoutError

from dispatcher.channel import Found, Handover, Lookup, NotFound, Outbound, Receipt, Unknown
from dispatcher.channel.rate import RateLimit
from dispatcher.domain.validity import PROVIDER_MAX, PROVIDER_MIN
from dispatcher.error import (
    DeliveryError,
    PermanentDelivery,
    TransientDelivery,
    UncertainDelivery,
)
from dispatcher.sms import count_segments

# Retrying cannot help: the number is invalid or cannot receive SMS (an invalid-phone
# hold follows, so later steps are held instead of tried against Twilio again).
PERMANENT_CODES = frozenset({21211, 21614})
# The recipient opted out (replied STOP): never retry, an opt-out hold follows.
UNSUBSCRIBED = 21610
RATE_LIMITED = 20429
AUTHENTICATION = 20003

_HTTP_LOG = "dispatcher.channel.twilio.http"


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The stock HTTP client, with Twilio's API hosts replaced by ``base_url``.

    For development and tests only (a local Twilio-compatible server); production
    leaves ``base_url`` unset and talks to https://api.twilio.com.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "twilio.com" or host.endswith(".twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


class PerThreadHttpClient(HttpClient):  # type: ignore[misc]
    """One stock HTTP client per thread, behind the single client the Twilio client holds.

    Why: ``TwilioHttpClient.request`` (twilio 9) stores each response on the client
    (``_test_only_last_response``) and returns it from there. The sender's concurrent
    deliveries run in worker threads sharing one Twilio client, so a thread could return
    another thread's response: a message recorded with another message's SID, or as
    accepted when it was refused, breaking exactly-once and reconciliation. Each thread's
    own client (and ``requests`` session, which is not meant to be shared) rules that out.
    """

    def __init__(self, make: Callable[[], HttpClient], *, logger: logging.Logger) -> None:
        super().__init__(logger=logger, is_async=False)
        self._make = make
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
        return client.request(*args, **kwargs)


def build_twilio_client(
    account_sid: str,
    auth_token: SecretStr,
    *,
    timeout_seconds: float,
    base_url: str = "",
) -> Any:
    """The official client with a request timeout and quiet HTTP logging (called by
    bootstrap), one HTTP client per delivery thread (:class:`PerThreadHttpClient`)."""
    logger = logging.getLogger(_HTTP_LOG)
    logger.setLevel(logging.WARNING)

    def make() -> HttpClient:
        if base_url:
            return BaseUrlHttpClient(base_url, timeout=timeout_seconds, logger=logger)
        return TwilioHttpClient(timeout=timeout_seconds, logger=logger)

    http = PerThreadHttpClient(make, logger=logger)
    return Client(account_sid, auth_token.get_secret_value(), http_client=http)


def _less_validity(message: Outbound, waited: timedelta) -> Outbound:
    """The message after ``waited`` in the send-rate bucket: the sender counted its validity
    up to the window's end from before the wait (rule sms.validity.window), so the wait
    comes off it. Too little left to hand over is a transient failure: the sender's next
    claim finds the window closed and defers the message to the next one."""
    if message.valid_for is None or waited <= timedelta(0):
        return message
    left = message.valid_for - waited
    if left < PROVIDER_MIN:
        raise TransientDelivery(
            "the contact window closed while the message waited for the send rate",
            code="validity:window_closing",
        )
    return replace(message, valid_for=left)


class TwilioSmsChannel:
    """Creates one Message resource per SMS; the SID is the receipt."""

    def __init__(
        self,
        client: Any,
        *,
        messaging_service_sid: str = "",
        from_number: str = "",
        status_callback_url: str = "",
        rate: RateLimit | None = None,
        lookup_limit: int = 200,
    ) -> None:
        if not messaging_service_sid and not from_number:
            raise ValueError("Twilio needs a messaging_service_sid or a from_number")
        self._client = client
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number
        self.status_callback_url = status_callback_url
        # Segments a second for this sender (number or messaging service), as carriers
        # count them; None: no limit of ours.
        self.rate = rate
        self.lookup_limit = lookup_limit

    def _request(self, message: Outbound) -> dict[str, str | int]:
        params: dict[str, str | int] = {"to": message.recipient, "body": message.body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        if self.status_callback_url:
            params["status_callback"] = with_message_id(
                self.status_callback_url, message.message_id
            )
        if message.valid_for is not None:
            # Twilio drops what it could not deliver in this many seconds (error 30036)
            # instead of delivering it after the customer's contact window has closed.
            params["validity_period"] = validity_period(message.valid_for)
        return params

    def _create(self, params: dict[str, str | int]) -> str:
        created = self._client.messages.create(**params)
        return str(created.sid)

    async def deliver(self, message: Outbound) -> Receipt:
        if self.rate is not None:
            waiting = time.monotonic()
            await self.rate.take(count_segments(message.body))
            message = _less_validity(message, timedelta(seconds=time.monotonic() - waiting))
        try:
            sid = await asyncio.to_thread(self._create, self._request(message))
        except (TwilioRestException, TwilioServiceException) as exc:
            raise map_twilio_error(exc.status, exc.code, _reason(exc)) from None
        except ConnectTimeout:
            raise TransientDelivery(
                "Twilio could not be reached in time", code="twilio:timeout"
            ) from None
        except Timeout:
            # The request went out; Twilio may have created the message before we gave up.
            raise UncertainDelivery(
                "Twilio did not answer in time; the message may have been accepted",
                code="twilio:timeout",
            ) from None
        except OSError as exc:  # requests' ConnectionError and friends are OSErrors
            if _before_sending(exc):
                raise TransientDelivery(
                    f"cannot reach Twilio: {type(exc).__name__}", code="twilio:connection"
                ) from None
            raise UncertainDelivery(
                f"connection to Twilio lost before its answer ({type(exc).__name__}); "
                "the message may have been accepted",
                code="twilio:connection",
            ) from None
        return Receipt(provider_message_id=sid)

    async def lookup(self, message: Handover) -> Lookup:
        """Whether Twilio has ``message``: its SID if so (see the module's docstring)."""
        try:
            found = await asyncio.to_thread(self._find, message)
        except (TwilioRestException, TwilioServiceException) as exc:
            return Unknown(f"Twilio lookup refused: HTTP {exc.status}, error {exc.code}")
        except TwilioException as exc:  # a list page that did not come (e.g. 503)
            return Unknown(f"Twilio lookup failed: {exc.args[0] if exc.args else exc}")
        except OSError as exc:
            return Unknown(f"Twilio lookup failed: {type(exc).__name__}")
        return NotFound() if found is None else Found(provider_message_id=found)

    def _find(self, message: Handover) -> str | None:
        # Clocks differ a little; Twilio's date_created has one-second resolution.
        since = message.claimed_at - timedelta(minutes=2)
        for candidate in self._client.messages.list(
            to=message.recipient, limit=self.lookup_limit, page_size=100
        ):
            sid = str(candidate.sid)
            created: datetime | None = candidate.date_created
            if sid in message.known_ids or str(candidate.direction or "").startswith("inbound"):
                continue
            if created is not None and created < since:
                continue
            if same_text(str(candidate.body or ""), message.body):
                return sid
        return None


def with_message_id(url: str, message_id: str) -> str:
    """The status callback URL with ``mid=<message_id>`` added, so a status callback for a
    message whose SID we never recorded (a crash mid-hand-over) still names its message."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "mid"]
    query.append(("mid", message_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


# Characters a messaging service's Smart Encoding may replace by GSM-7 look-alikes.
_LOOK_ALIKES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def same_text(theirs: str, ours: str) -> bool:
    """Whether Twilio's stored body is our text: equal, or equal once the look-alike
    characters Smart Encoding substitutes (curly quotes, dashes, accents) are folded."""
    if theirs == ours:
        return True
    return _folded(theirs) == _folded(ours)


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_LOOK_ALIKES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _before_sending(exc: OSError) -> bool:
    """Whether a connection error happened before the request left (no connection could
    be made): then Twilio cannot have the message and a retry is safe."""
    if not isinstance(exc, RequestsConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    cause = getattr(reason, "reason", reason)
    # urllib3's NewConnectionError (refused, unreachable, DNS) is a ConnectTimeoutError.
    return isinstance(cause, ConnectTimeoutError)


def validity_period(valid_for: timedelta) -> int:
    """Whole seconds, rounded down (never past the window end), within Twilio's 1..36000."""
    bounded = max(PROVIDER_MIN, min(PROVIDER_MAX, valid_for))
    return int(bounded.total_seconds())


def _reason(exc: TwilioRestException | TwilioServiceException) -> str:
    # ``str()`` of these adds terminal colours and a docs URL; keep the plain reason.
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
    return str(text)


def map_twilio_error(status: int | None, code: int | None, reason: str) -> DeliveryError:
    """Turn Twilio's HTTP status and error code into our transient/permanent outcome, and
    the hold the answer calls for (21610: opted out, Reg F 1006.6(e) / TCPA; 21211 and
    21614: invalid number, house rule HR-3)."""
    status = int(status or 0)
    code = int(code) if code is not None else status
    text = f"Twilio refused the message (HTTP {status}, error {code}): {reason}"
    tag = f"twilio:{code}"
    if code == UNSUBSCRIBED:
        return PermanentDelivery(text, code=tag, hold="opted_out_sms")
    if code in PERMANENT_CODES:
        return PermanentDelivery(text, code=tag, hold="invalid_phone")
    if code == RATE_LIMITED or status == 429 or status >= 500:
        return TransientDelivery(text, code=tag)
    if code == AUTHENTICATION or status in (401, 403):
        return TransientDelivery(text, code=tag)
    if 400 <= status < 500:
        return PermanentDelivery(text, code=tag)
    return TransientDelivery(text, code=tag)
