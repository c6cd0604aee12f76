"""File sinks: each channel writes what it would send into a directory.

Used by ``dispatcher demo``, development and tests; never what production sends with.
SMS become ``.txt``, email ``.eml`` (a real MIME message any mail client opens), letters
``.pdf`` compiled from their Typst source. Files are written to a temporary name and
renamed, so a reader never sees half a file; that is also what makes every sink a
:class:`~dispatcher.channel.Reconciler`: the file of a message is there exactly when it
was delivered, so an interrupted hand-over is settled by looking for it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path

from dispatcher.channel import Found, Handover, Lookup, NotFound, Outbound, Receipt
from dispatcher.error import PermanentDelivery, TemplateError, TransientDelivery


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # A full or read-only disk may clear; the retry policy decides.
        raise TransientDelivery(f"cannot write {path}: {exc.strerror}") from exc


def _found(path: Path, provider_message_id: str | None = None) -> Lookup:
    if not path.exists():
        return NotFound()
    return Found(provider_message_id or f"file:{path.name}", artifact_path=str(path))


class FileSmsSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def lookup(self, message: Handover) -> Lookup:
        return _found(self.directory / "sms" / f"{message.message_id}.txt")

    async def deliver(self, message: Outbound) -> Receipt:
        path = self.directory / "sms" / f"{message.message_id}.txt"
        text = f"To: {message.recipient}\n\n{message.body}\n"
        await asyncio.to_thread(_write_atomic, path, text.encode())
        return Receipt(provider_message_id=f"file:{path.name}", artifact_path=str(path))


def compose_email(message: Outbound, *, sender: str, domain: str) -> EmailMessage:
    """Build the MIME message every email channel sends (file sink and SMTP alike).

    Text and HTML parts, our own Message-ID (made from ``message_id`` so it can be traced
    back) and the RFC 8058 one-click unsubscribe headers when there is a URL.
    """
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.recipient
    mail["Subject"] = message.subject or ""
    mail["Message-ID"] = make_msgid(idstring=message.message_id, domain=domain)
    if message.unsubscribe_url:
        mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(message.body)
    if message.body_html:
        mail.add_alternative(message.body_html, subtype="html")
    return mail


def sender_domain(address: str) -> str:
    """The domain our Message-IDs are made in: the sender address's, else ``localhost``."""
    return address.rpartition("@")[2] or "localhost"


class FileEmailSink:
    def __init__(self, directory: Path, *, sender_name: str, sender_address: str) -> None:
        self.directory = directory
        self.sender = formataddr((sender_name, sender_address))
        self.domain = sender_domain(sender_address)

    def compose(self, message: Outbound) -> EmailMessage:
        """Build the MIME message: text and HTML parts, our Message-ID, RFC 8058 headers."""
        return compose_email(message, sender=self.sender, domain=self.domain)

    async def lookup(self, message: Handover) -> Lookup:
        path = self.directory / "email" / f"{message.message_id}.eml"
        if not path.exists():
            return NotFound()
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        return _found(path, str(mail["Message-ID"]))

    async def deliver(self, message: Outbound) -> Receipt:
        mail = self.compose(message)
        path = self.directory / "email" / f"{message.message_id}.eml"
        await asyncio.to_thread(_write_atomic, path, bytes(mail))
        return Receipt(provider_message_id=str(mail["Message-ID"]), artifact_path=str(path))


class FileLetterSink:
    """Compiles the letter's Typst source to PDF and drops it in ``letter/``."""

    def __init__(self, directory: Path, compile_pdf: Callable[[str], bytes]) -> None:
        self.directory = directory
        self._compile = compile_pdf

    async def lookup(self, message: Handover) -> Lookup:
        return _found(self.directory / "letter" / f"{message.message_id}.pdf")

    async def deliver(self, message: Outbound) -> Receipt:
        try:
            pdf = await asyncio.to_thread(self._compile, message.body)
        except TemplateError as exc:
            raise PermanentDelivery(f"letter does not compile: {exc}") from exc
        path = self.directory / "letter" / f"{message.message_id}.pdf"
        await asyncio.to_thread(_write_atomic, path, pdf)
        return Receipt(provider_message_id=f"file:{path.name}", artifact_path=str(path))
