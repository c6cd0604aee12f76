"""CSRF protection: a synchronizer token per session, checked on every unsafe request.

A form carries the session's token in the hidden field ``csrf_token`` (templates:
``{{ csrf_field() }}``); htmx sends it in the ``X-CSRF-Token`` header (base.html sets
that once for the whole page). Another site can make a logged-in browser post to us but
cannot read the token, so its request arrives without it and is refused 403 (HR-34).
The login form, before any session exists, uses a double-submit cookie instead.
"""

from __future__ import annotations

import secrets

from fastapi import Request

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRefused(Exception):
    """An unsafe request without the right token: answered 403, nothing changed."""


def tokens_match(sent: str | None, expected: str) -> bool:
    """Constant-time comparison; an empty expected token never matches."""
    return bool(sent) and bool(expected) and secrets.compare_digest(str(sent), expected)


async def sent_token(request: Request) -> str | None:
    """The token the request carries: header first, else the form field."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check(request: Request, expected: str) -> None:
    """Raise :class:`CsrfRefused` for an unsafe method without ``expected``."""
    if request.method in SAFE_METHODS:
        return
    if not tokens_match(await sent_token(request), expected):
        raise CsrfRefused(request.url.path)
