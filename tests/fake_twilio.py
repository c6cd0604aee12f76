"""A Twilio-compatible HTTP server on loopback, for driving the official client in tests.

Speaks the resource the SMS channel calls, ``/2010-04-01/Accounts/{sid}/Messages.json``:

- ``POST`` creates a message: checks HTTP Basic auth (wrong credentials: 401 with Twilio
  error 20003), records every request it received, answers 201 with a Twilio-shaped
  Message resource, or, for numbers it was told about, Twilio's error body
  (``{"code", "message", "more_info", "status"}``) with the chosen HTTP status, or a slow
  answer (to exercise client timeouts);
- ``GET`` lists messages, newest first, in Twilio's page shape (``messages`` plus
  ``page``, ``page_size``, ``next_page_uri`` ...), filtered by ``To``, ``From`` and
  ``DateSent`` / ``DateSent>`` / ``DateSent<`` (dates, UTC, as Twilio reads them; a
  message still queued has no ``date_sent`` and is left out by a ``DateSent`` filter).

Failure controls: ``errors`` (an error answer per number), ``delays`` (slow answers),
``drop`` / ``drop_all`` (the message is created, then the connection is closed before the
answer: the client cannot know it went), ``outage`` (every request answered 503, error
20503, nothing created), ``unsent`` (created messages keep ``date_sent`` null),
:meth:`FakeTwilio.pause` / :meth:`FakeTwilio.resume` (no connection accepted meanwhile;
the kernel holds them, as many as a cluster of senders opens at once).

It also plays Twilio's side of the webhooks: :meth:`FakeTwilio.send_status` posts a
status callback for a message it created, and :func:`post_signed` any signed form (an
inbound SMS), signed the way Twilio signs (``X-Twilio-Signature``: HMAC-SHA1 of the
public URL and the sorted form fields, keyed with the auth token; computed with the
official ``RequestValidator``), to wherever the service really listens.
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
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC[0-9a-zA-Z]+)/Messages\.json$")


class _Server(ThreadingHTTPServer):
    """The fake's listening socket, with a backlog that holds every connection a cluster
    test opens at once.

    socketserver listens with a backlog of 5. Three ``dispatcher serve`` processes with 8
    concurrent sends each (a new connection per request) keep more handshakes pending
    than that whenever the accept loop lags (a loaded CI machine, the GIL this test
    process shares). Linux then drops handshakes (the client tries again 1, 3, 7 s
    later) and, past the same limit for half-open ones, answers with SYN cookies, some of
    which it refuses later with a reset, after the client has sent its request. A request
    the fake never read then fails as "connection lost before the answer", which the
    channel rightly calls uncertain: the message stays ``sending`` until its lease
    (15 minutes) and a cluster test's wait runs out. Twilio's front end takes every
    connection; so does the fake.
    """

    request_queue_size = 1024  # Linux caps it at net.core.somaxconn
    daemon_threads = True


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
    # recipient numbers whose message is created, then the connection dropped unanswered
    drop: set[str] = field(default_factory=set)
    drop_all: bool = False
    # every request answered 503 (Twilio error 20503), nothing created
    outage: bool = False
    # created messages stay queued (no date_sent), as behind a rate-limited sender
    unsent: bool = False
    received: list[Received] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    # message SID -> the StatusCallback URL it was created with
    callbacks: dict[str, str] = field(default_factory=dict)
    lookups: list[dict[str, str]] = field(default_factory=list)
    _server: _Server | None = None
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
                fake._list(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.resume()
        return self

    def pause(self) -> None:
        """Stop accepting connections, as a starved process would; the socket still
        listens, so what arrives meanwhile waits in the kernel until :meth:`resume`."""
        assert self._server is not None
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def resume(self) -> None:
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

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

    def _refused(self, request: BaseHTTPRequestHandler, path: str) -> bool:
        """Answer 404/401/403/503 when the request cannot go on; False when it can."""
        match = MESSAGES.match(path)
        if match is None:
            self._reply(request, 404, _error(20404, "The requested resource was not found", 404))
            return True
        if not self._authorised(request.headers.get("Authorization")):
            self._reply(request, 401, _error(20003, "Authenticate", 401))
            return True
        if match["sid"] != self.account_sid:
            self._reply(request, 403, _error(20003, "Resource not accessible", 403))
            return True
        if self.outage:
            self._reply(request, 503, _error(20503, "Service Unavailable", 503))
            return True
        return False

    def _list(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        if self._refused(request, parts.path):
            return
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self.lookups.append(query)
        found = [m for m in reversed(self.created) if _matches(m, query)]
        size = int(query.get("PageSize", 50))
        page = int(query.get("Page", 0))
        chunk = [
            {k: v for k, v in m.items() if k != "status_callback"}
            for m in found[page * size : (page + 1) * size]
        ]
        base = parts.path

        def uri(number: int) -> str:
            return base + "?" + urlencode({**query, "Page": number, "PageSize": size})

        more = (page + 1) * size < len(found)
        self._reply(
            request,
            200,
            {
                "messages": chunk,
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(len(chunk) - 1, 0),
                "uri": uri(page),
                "first_page_uri": uri(0),
                "previous_page_uri": uri(page - 1) if page else None,
                "next_page_uri": uri(page + 1) if more else None,
            },
        )

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length).decode()
        if self._refused(request, request.path):
            return
        form = {key: values[-1] for key, values in parse_qs(raw).items()}
        self.received.append(Received(account_sid=self.account_sid, form=form))
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
        created = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=True)
        resource = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": created,
            "date_sent": None if self.unsent else created,
            "date_updated": created,
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
        self.created.append({**resource, "status_callback": form.get("StatusCallback")})
        if self.drop_all or to in self.drop:
            # Created, but the answer never comes: the connection goes down first.
            request.close_connection = True
            request.connection.shutdown(2)
            return
        self._reply(request, 201, resource)

    def created_for(self, message_id: str) -> list[dict[str, Any]]:
        """Messages created whose status callback names ``message_id`` (``?mid=``)."""
        return [m for m in self.created if (m["status_callback"] or "").endswith(f"={message_id}")]

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


def _sent_on(resource: dict[str, Any]) -> date | None:
    sent = resource.get("date_sent")
    if not sent:
        return None
    return datetime.strptime(sent, "%a, %d %b %Y %H:%M:%S %Z").date()


def _matches(resource: dict[str, Any], query: dict[str, str]) -> bool:
    """Twilio's list filters: To, From and DateSent (=, > meaning on or after, < meaning
    on or before; compared by UTC date, the time of day is ignored)."""
    if "To" in query and resource["to"] != query["To"]:
        return False
    if "From" in query and resource["from"] != query["From"]:
        return False
    for key, test in (
        ("DateSent", lambda d, q: d == q),
        ("DateSent>", lambda d, q: d >= q),
        ("DateSent<", lambda d, q: d <= q),
    ):
        if key in query:
            on = _sent_on(resource)
            if on is None or not test(on, date.fromisoformat(query[key][:10])):
                return False
    return True


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
