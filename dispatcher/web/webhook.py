"""Twilio webhooks: delivery status callbacks and inbound SMS.

Every request must carry a valid ``X-Twilio-Signature`` (HMAC of the URL Twilio called
and the form fields, keyed with the auth token; checked with the official
``twilio.request_validator.RequestValidator``). The URL is the *public* one configured
(``twilio.webhook_base_url``, else the scheme and host of ``twilio.status_callback_url``)
plus the request's path and query: behind a proxy or load balancer the address the
service sees is not the one Twilio signed. A missing or wrong signature, or no auth token
or public URL to check against, is answered 403 and changes nothing.

The work itself is in :mod:`dispatcher.service.delivery` and
:mod:`dispatcher.service.inbound`, run in a worker thread (the store is synchronous and
the event loop also runs the send loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.twiml.messaging_response import MessagingResponse  # type: ignore[import-untyped]

from dispatcher.service import delivery, inbound
from dispatcher.settings import TwilioSettings

if TYPE_CHECKING:
    from dispatcher.daemon import Service

log = structlog.get_logger("dispatcher.webhook")

SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML = "application/xml"
# Twilio's forms are a few kilobytes (an inbound SMS body is at most 1600 characters);
# anything much larger is refused before it is read whole or its signature computed.
MAX_FORM_BYTES = 64 * 1024


def _form(fields: dict[str, str], required: list[str]) -> dict[str, object]:
    """The OpenAPI description of a Twilio form (the handlers read the raw body, to check
    its signature first): what the schema-driven fuzz tests generate requests from."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            name: {"type": "string", "description": text}
                            for name, text in fields.items()
                        },
                        "required": required,
                    }
                }
            },
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "HMAC-SHA1 of the public URL and the form, keyed with the "
                "auth token; anything else is answered 403",
            }
        ],
    }


STATUS_FORM = _form(
    {
        "MessageSid": "Twilio's message SID",
        "MessageStatus": "queued, sent, delivered, undelivered, failed ...",
        "SmsSid": "older name of MessageSid",
        "SmsStatus": "older name of MessageStatus",
        "ErrorCode": "Twilio error code of a failure",
    },
    ["MessageSid", "MessageStatus"],
)
INBOUND_FORM = _form(
    {"From": "the sender's number", "Body": "the text", "MessageSid": "Twilio's SID"},
    ["From", "Body"],
)


def public_base(settings: TwilioSettings) -> str:
    """Scheme and host Twilio calls us at: ``webhook_base_url``, else those of
    ``status_callback_url``; empty when neither is set (then nothing can be verified)."""
    if settings.webhook_base_url:
        return settings.webhook_base_url.rstrip("/")
    if settings.status_callback_url:
        parts = urlsplit(settings.status_callback_url)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return ""


def webhook_router(service: Service) -> APIRouter:
    """The ``/webhooks/twilio/*`` routes of ``service``."""
    router = APIRouter(prefix="/webhooks/twilio")
    app = service.app
    settings = app.settings

    async def verified(request: Request, endpoint: str) -> dict[str, str]:
        """The form fields of a request Twilio signed; 403 for anything else."""
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
            raise HTTPException(status_code=413, detail="request too large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(status_code=413, detail="request too large")
        raw = body.decode("utf-8", errors="replace")
        params = dict(parse_qsl(raw, keep_blank_values=True))
        token = settings.twilio.auth_token.get_secret_value()
        base = public_base(settings.twilio)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not token or not base:
            log.error(
                "webhook_refused",
                path=request.url.path,
                reason="no auth token or public URL configured to verify signatures",
            )
            service.metrics.webhook_received(endpoint, "refused")
            raise HTTPException(status_code=403, detail="signature cannot be verified")
        if not signature or not RequestValidator(token).validate(url, params, signature):
            log.warning(
                "webhook_refused",
                path=request.url.path,
                reason="missing signature" if not signature else "wrong signature",
            )
            service.metrics.webhook_received(endpoint, "refused")
            raise HTTPException(status_code=403, detail="invalid signature")
        if any("\x00" in key or "\x00" in value for key, value in params.items()):
            # Twilio never sends NUL; PostgreSQL cannot store it in text (a 500 before).
            log.warning("webhook_refused", path=request.url.path, reason="NUL character in form")
            service.metrics.webhook_received(endpoint, "refused")
            raise HTTPException(status_code=400, detail="NUL character in form field")
        return params

    @router.post("/status", openapi_extra=STATUS_FORM)
    async def status(request: Request) -> Response:
        """A delivery status callback: recorded on the message, never moving it back."""
        form = await verified(request, "status")
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        state = form.get("MessageStatus") or form.get("SmsStatus") or ""
        if not sid or not state:
            raise HTTPException(status_code=400, detail="MessageSid and MessageStatus needed")
        report = delivery.StatusReport(sid, state, form.get("ErrorCode") or None)
        outcome = await run_in_threadpool(
            delivery.record_status_waiting,
            app.store,
            app.timing,
            report,
            service.clock,
            max_attempts=settings.send.max_attempts,
        )
        service.metrics.webhook_received("status", _status_outcome(outcome))
        if not outcome.found:
            log.warning("delivery_status_unmatched", provider_message_id=sid, status=state)
        else:
            log.info(
                "delivery_status_received",
                message=outcome.message_id,
                status=state,
                error_code=report.error_code,
                applied=outcome.changed,
                requeued_for=outcome.requeued_for,
                failed=outcome.failed,
            )
        return Response(status_code=200)

    @router.post("/inbound", openapi_extra=INBOUND_FORM)
    async def inbound_sms(request: Request) -> Response:
        """An SMS a customer sent us: STOP/START/HELP acted on, everything audited."""
        form = await verified(request, "inbound")
        creditor = settings.creditor
        outcome = await run_in_threadpool(
            lambda: inbound.receive(
                app.store,
                app.policies,
                form.get("From", ""),
                form.get("Body", ""),
                service.clock.now(),
                region=settings.default_region,
                help_values={
                    "creditor_name": creditor.name,
                    "creditor_phone": creditor.phone,
                    "creditor_website": creditor.website,
                    "opt_out": creditor.opt_out_sms,
                },
                provider_message_id=form.get("MessageSid"),
            )
        )
        log.info(
            "inbound_sms_received",
            intent=outcome.reading.intent.value,
            keyword=outcome.reading.keyword,
            needs_review=outcome.reading.needs_review,
            accounts=len(outcome.accounts),
            holds_placed=len(outcome.placed),
            holds_lifted=len(outcome.lifted),
        )
        service.metrics.webhook_received("inbound", outcome.reading.intent.value)
        reply = MessagingResponse()
        if outcome.reply:
            reply.message(outcome.reply)
        return Response(str(reply), media_type=TWIML)

    return router


def _status_outcome(outcome: delivery.StatusOutcome) -> str:
    if not outcome.found:
        return "unmatched"
    if outcome.requeued_for is not None or outcome.failed:
        return "requeued"
    return "applied" if outcome.changed else "ignored"
