"""A Twilio-compatible HTTP server on loopback, for driving the official client in tests.

It also plays Twilio's side of the webhooks: :meth:`FakeTwilio.send_status` posts a
status callback for a message it created, and :func:`post_signed` any signed form (an
inbound SMS), signed the way Twilio signs (``X-Twilio-Signature``: HMAC-SHA1 of the
public URL and the sorted form fields, keyed with the auth token; computed with the
official ``RequestValidator``), to wherever the service really listens.

Speaks the one resource the SMS channel calls, ``POST /2010-04-01/Accounts/{sid}/Messages.json``:
checks HTTP Basic auth (wrong credentials: 401 with Twilio error 20003), records every
request it received, answers 201 with a Twilio-shaped Message resource, or, for numbers it
was told about, Twilio's error body (``{"code", "message", "more_info", "status"}``) with
the chosen HTTP status, or a slow answer (to exercise client timeouts).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-zA-Z]+)/Messages\.json$")


@dataclass(frozen=True)
class Received:
    """One request the fake received: the account in the path and the form fields."""

    account_sid: str
    form: dict[str, str]


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    # recipient number -> (HTTP status, Twilio error code); e.g. {"+15005550001": (400, 21211)}
    errors: dict[str, tuple[int, int]] = field(default_factory=dict)
    # recipient number -> seconds to wait before answering
    delays: dict[str, float] = field(default_factory=dict)
    # seconds to wait before answering any number not in ``delays``
    default_delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    # message SID -> the StatusCallback URL it was created with
    callbacks: dict[str, str] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTwilio:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._reply(self, 404, {"code": 20404, "message": "not found", "status": 404})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        match = MESSAGES.match(request.path)
        if match is None:
            self._reply(request, 404, _error(20404, "The requested resource was not found", 404))
            return
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode()
        if not self._authorised(request.headers.get("Authorization")):
            self._reply(request, 401, _error(20003, "Authenticate", 401))
            return
        if match["sid"] != self.account_sid:
            self._reply(request, 403, _error(20003, "Resource not accessible", 403))
            return
        form = {key: values[-1] for key, values in parse_qs(raw).items()}
        self.received.append(Received(account_sid=match["sid"], form=form))
        to = form.get("To", "")
        delay = self.delays.get(to, self.default_delay)
        if delay:
            time.sleep(delay)
        if "To" not in form or "Body" not in form:
            self._reply(request, 400, _error(21604, "A 'To' phone number is required.", 400))
            return
        if "From" not in form and "MessagingServiceSid" not in form:
            self._reply(request, 400, _error(21603, "A 'From' phone number is required.", 400))
            return
        if to in self.errors:
            status, code = self.errors[to]
            self._reply(request, status, _error(code, f"error {code} for {to}", status))
            return
        sid = "SM" + secrets.token_hex(16)
        resource = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_segments": "1",
            "price": None,
            "sid": sid,
            "status": "queued" if "MessagingServiceSid" not in form else "accepted",
            "to": to,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        if "StatusCallback" in form:
            self.callbacks[sid] = form["StatusCallback"]
        self.created.append(resource)
        self._reply(request, 201, resource)

    def send_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        deliver_to: str,
        token: str | None = None,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """Post Twilio's status callback for message ``sid`` to the StatusCallback URL it
        was created with, signed for that (public) URL but sent to ``deliver_to`` (the
        scheme, host and port the service really listens on, as a proxy would)."""
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if error_code is not None:
            form["ErrorCode"] = str(error_code)
        return post_signed(
            self.callbacks[sid],
            form,
            token or self.auth_token,
            deliver_to=deliver_to,
            client=client,
        )

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def signature(url: str, form: Mapping[str, str], token: str) -> str:
    """``X-Twilio-Signature`` for a POST of ``form`` to ``url``, as Twilio computes it."""
    return str(RequestValidator(token).compute_signature(url, dict(form)))


def post_signed(
    public_url: str,
    form: Mapping[str, str],
    token: str,
    *,
    deliver_to: str,
    signature_header: str | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST ``form`` signed for ``public_url`` to the same path (and query) on
    ``deliver_to``; ``signature_header`` overrides the signature ("" sends none).
    ``client`` (e.g. FastAPI's TestClient) sends it instead of a fresh connection."""
    parts = urlsplit(public_url)
    target = deliver_to.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    sig = signature(public_url, form, token) if signature_header is None else signature_header
    headers = {"X-Twilio-Signature": sig} if sig else {}
    if client is not None:
        return client.post(target, data=dict(form), headers=headers)
    return httpx.post(target, data=dict(form), headers=headers, timeout=10)
