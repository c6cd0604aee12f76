"""SMS through Twilio Programmable Messaging, with the official ``twilio`` client.

The client is synchronous (``requests``), so each call runs in a worker thread. The
Message SID Twilio returns is the provider message id. A message with ``valid_for`` is
created with ``validity_period`` (whole seconds, 1..36000): Twilio drops it, error 30036,
rather than deliver it after the customer's contact window (rule ``sms.validity.window``).

Error mapping, at this edge (Twilio error codes: https://www.twilio.com/docs/api/errors):

============================================  ============================================
21211 invalid ``To``, 21614 not a mobile      PermanentDelivery ``twilio:21211`` / ``21614``
21610 recipient replied STOP                  PermanentDelivery ``twilio:21610``
20429 / HTTP 429 too many requests            TransientDelivery ``twilio:20429``
HTTP 5xx                                      TransientDelivery ``twilio:<code>``
20003 / HTTP 401, 403 (credentials)           TransientDelivery (fixable by ops; then it goes)
any other 4xx                                 PermanentDelivery ``twilio:<code>``
timeout                                       TransientDelivery ``twilio:timeout``
connection refused / reset                    TransientDelivery ``twilio:connection``
============================================  ============================================

The auth token is a :class:`~pydantic.SecretStr`, unwrapped only to build the client.
The client's own HTTP logging (which prints request and response bodies, i.e. phone
numbers and message text) goes to a logger held at WARNING.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from requests.exceptions import Timeout  # type: ignore[import-untyped,unused-ignore]
from twilio.base.exceptions import (  # type: ignore[import-untyped]
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.http_client import TwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from dispatcher.channel import Outbound, Receipt
from dispatcher.domain.validity import PROVIDER_MAX, PROVIDER_MIN
from dispatcher.error import DeliveryError, PermanentDelivery, TransientDelivery

# Retrying cannot help: the number is invalid or cannot receive SMS.
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


def build_twilio_client(
    account_sid: str,
    auth_token: SecretStr,
    *,
    timeout_seconds: float,
    base_url: str = "",
) -> Any:
    """The official client with a request timeout and quiet HTTP logging (called by bootstrap)."""
    logger = logging.getLogger(_HTTP_LOG)
    logger.setLevel(logging.WARNING)
    http: Any
    if base_url:
        http = BaseUrlHttpClient(base_url, timeout=timeout_seconds, logger=logger)
    else:
        http = TwilioHttpClient(timeout=timeout_seconds, logger=logger)
    return Client(account_sid, auth_token.get_secret_value(), http_client=http)


class TwilioSmsChannel:
    """Creates one Message resource per SMS; the SID is the receipt."""

    def __init__(
        self,
        client: Any,
        *,
        messaging_service_sid: str = "",
        from_number: str = "",
        status_callback_url: str = "",
    ) -> None:
        if not messaging_service_sid and not from_number:
            raise ValueError("Twilio needs a messaging_service_sid or a from_number")
        self._client = client
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number
        self.status_callback_url = status_callback_url

    def _request(self, message: Outbound) -> dict[str, str | int]:
        params: dict[str, str | int] = {"to": message.recipient, "body": message.body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
        else:
            params["from_"] = self.from_number
        if self.status_callback_url:
            params["status_callback"] = self.status_callback_url
        if message.valid_for is not None:
            # Twilio drops what it could not deliver in this many seconds (error 30036)
            # instead of delivering it after the customer's contact window has closed.
            params["validity_period"] = validity_period(message.valid_for)
        return params

    def _create(self, params: dict[str, str | int]) -> str:
        created = self._client.messages.create(**params)
        return str(created.sid)

    async def deliver(self, message: Outbound) -> Receipt:
        try:
            sid = await asyncio.to_thread(self._create, self._request(message))
        except (TwilioRestException, TwilioServiceException) as exc:
            raise map_twilio_error(exc.status, exc.code, _reason(exc)) from None
        except Timeout:
            raise TransientDelivery(
                "Twilio did not answer in time", code="twilio:timeout"
            ) from None
        except OSError as exc:  # requests' ConnectionError and friends are OSErrors
            raise TransientDelivery(
                f"cannot reach Twilio: {type(exc).__name__}", code="twilio:connection"
            ) from None
        return Receipt(provider_message_id=sid)


def validity_period(valid_for: timedelta) -> int:
    """Whole seconds, rounded down (never past the window end), within Twilio's 1..36000."""
    bounded = max(PROVIDER_MIN, min(PROVIDER_MAX, valid_for))
    return int(bounded.total_seconds())


def _reason(exc: TwilioRestException | TwilioServiceException) -> str:
    # ``str()`` of these adds terminal colours and a docs URL; keep the plain reason.
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
    return str(text)


def map_twilio_error(status: int | None, code: int | None, reason: str) -> DeliveryError:
    """Turn Twilio's HTTP status and error code into our transient/permanent outcome."""
    status = int(status or 0)
    code = int(code) if code is not None else status
    text = f"Twilio refused the message (HTTP {status}, error {code}): {reason}"
    tag = f"twilio:{code}"
    if code in PERMANENT_CODES or code == UNSUBSCRIBED:
        return PermanentDelivery(text, code=tag)
    if code == RATE_LIMITED or status == 429 or status >= 500:
        return TransientDelivery(text, code=tag)
    if code == AUTHENTICATION or status in (401, 403):
        return TransientDelivery(text, code=tag)
    if 400 <= status < 500:
        return PermanentDelivery(text, code=tag)
    return TransientDelivery(text, code=tag)
