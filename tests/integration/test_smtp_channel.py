"""The SMTP email channel against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from dispatcher.bootstrap import file_channels
from dispatcher.channel import Outbound
from dispatcher.channel.smtp import SmtpEmailChannel, SmtpServer
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import (
    ConfigError,
    DeliveryError,
    PermanentDelivery,
    TransientDelivery,
    UncertainDelivery,
)
from dispatcher.settings import Settings, SinkSettings, SmtpSettings

SENDER = "collections@acme-finance.example"
USER, PASSWORD = "dispatcher", "smtp-password-which-must-stay-secret"
UNSUBSCRIBE = "https://acme-finance.example/unsubscribe/A-1"


@dataclass
class Received:
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def mail(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Recorder:
    """aiosmtpd handler: records messages; answers chosen recipients with chosen replies."""

    replies: dict[str, str] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    hang_up_on_data: set[str] = field(default_factory=set)
    messages: list[Received] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.connections.append(server)
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.slow:
            await asyncio.sleep(self.slow[address])
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        if set(envelope.rcpt_tos) & self.hang_up_on_data:
            server.transport.close()
        return "250 2.0.0 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpFixture:
    recorder: Recorder
    controller: Controller

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def hang_up(self, connection: Any) -> None:
        """Close a connection from the server side, as an idle timeout would."""
        self.controller.loop.call_soon_threadsafe(connection.transport.close)


@pytest.fixture
def smtp_server() -> Iterator[SmtpFixture]:
    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield SmtpFixture(recorder, controller)
    controller.stop()


def channel_for(
    smtp: SmtpFixture, *, username: str = "", password: str = "", timeout: float = 5.0
) -> SmtpEmailChannel:
    server = SmtpServer(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username=username,
        password=SecretStr(password),
        timeout_seconds=timeout,
        connect_attempts=2,
    )
    return SmtpEmailChannel(server, sender_name="Acme Consumer Finance", sender_address=SENDER)


def email(to: str = "ada@example.com", message_id: str = "msg-1") -> Outbound:
    return Outbound(
        message_id=message_id,
        account_id="A-1",
        channel=ChannelKind.EMAIL,
        recipient=to,
        subject="Your payment is past due",
        body="Dear Ada, your payment of $120.00 is 12 days past due. — Zoë",
        body_html="<p>Dear Ada, your payment of <b>$120.00</b> is 12 days past due.</p>",
        unsubscribe_url=UNSUBSCRIBE,
    )


def run_and_close(channel: SmtpEmailChannel, *messages: Outbound) -> list[str]:
    async def go() -> list[str]:
        try:
            return [(await channel.deliver(m)).provider_message_id for m in messages]
        finally:
            await channel.close()

    return asyncio.run(go())


def deliver_error(channel: SmtpEmailChannel, message: Outbound) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        run_and_close(channel, message)
    return caught.value


def test_the_message_arrives_as_mime_with_our_message_id(smtp_server: SmtpFixture) -> None:
    [message_id] = run_and_close(channel_for(smtp_server), email())

    [received] = smtp_server.recorder.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ["ada@example.com"]
    mail = received.mail
    assert mail["From"] == "Acme Consumer Finance <collections@acme-finance.example>"
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Your payment is past due"
    assert mail["Message-ID"].strip() == message_id  # a long id is folded onto its own line
    assert "msg-1" in message_id
    assert message_id.endswith("@acme-finance.example>")
    assert mail["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "12 days past due. — Zoë" in text.get_content()
    assert "<b>$120.00</b>" in html.get_content()


def test_one_connection_carries_a_whole_batch(smtp_server: SmtpFixture) -> None:
    channel = channel_for(smtp_server)
    messages = [email(f"person{i}@example.com", f"msg-{i}") for i in range(5)]

    async def batch() -> None:
        try:
            await asyncio.gather(*(channel.deliver(m) for m in messages))
        finally:
            await channel.close()

    asyncio.run(batch())

    received = smtp_server.recorder.messages
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(m.recipient for m in messages)
    assert len({r.peer for r in received}) == 1
    assert len(smtp_server.recorder.connections) == 1
    assert channel.connections_opened == 1


def test_a_dropped_connection_is_reopened(smtp_server: SmtpFixture) -> None:
    channel = channel_for(smtp_server)

    async def go() -> None:
        try:
            await channel.deliver(email("first@example.com", "msg-1"))
            smtp_server.hang_up(smtp_server.recorder.connections[-1])
            await asyncio.sleep(0.05)
            await channel.deliver(email("second@example.com", "msg-2"))
        finally:
            await channel.close()

    asyncio.run(go())

    received = smtp_server.recorder.messages
    assert [r.rcpt_tos for r in received] == [["first@example.com"], ["second@example.com"]]
    assert channel.connections_opened == 2
    assert len({r.peer for r in received}) == 2


def test_a_stale_connection_not_yet_noticed_is_reopened(smtp_server: SmtpFixture) -> None:
    channel = channel_for(smtp_server)

    async def go() -> None:
        try:
            await channel.deliver(email("first@example.com", "msg-1"))
            smtp_server.hang_up(smtp_server.recorder.connections[-1])
            await channel.deliver(email("second@example.com", "msg-2"))
        finally:
            await channel.close()

    asyncio.run(go())

    assert len(smtp_server.recorder.messages) == 2


@pytest.mark.parametrize(
    ("reply", "kind", "code", "hold"),
    [
        ("451 4.3.0 Mailbox temporarily unavailable", TransientDelivery, "smtp:451", None),
        ("450 4.2.1 Try again later", TransientDelivery, "smtp:450", None),
        ("550 5.1.1 No such user here", PermanentDelivery, "smtp:550", "invalid_email"),
        (
            "551 User not local; please try elsewhere",
            PermanentDelivery,
            "smtp:551",
            "invalid_email",
        ),
        ("553 5.1.3 Bad recipient address syntax", PermanentDelivery, "smtp:553", "invalid_email"),
        # A policy refusal (our server on a block list) or a full mailbox says nothing
        # about the address: the message fails, the customer's email is not held.
        ("550 5.7.1 Message rejected by policy", PermanentDelivery, "smtp:550", None),
        ("552 5.2.2 Mailbox full", PermanentDelivery, "smtp:552", None),
        ("554 5.7.1 Relay access denied", PermanentDelivery, "smtp:554", None),
    ],
)
def test_recipient_replies_map_to_transient_or_permanent_and_the_hold_they_call_for(
    smtp_server: SmtpFixture, reply: str, kind: type[DeliveryError], code: str, hold: str | None
) -> None:
    smtp_server.recorder.replies["bad@example.com"] = reply

    error = deliver_error(channel_for(smtp_server), email("bad@example.com"))

    assert type(error) is kind
    assert error.code == code
    assert error.hold == hold
    assert reply.split(" ", 1)[1] in str(error)  # the server's own words are kept
    assert smtp_server.recorder.messages == []


def test_a_refused_recipient_leaves_the_connection_usable(smtp_server: SmtpFixture) -> None:
    smtp_server.recorder.replies["gone@example.com"] = "550 5.1.1 No such user here"
    channel = channel_for(smtp_server)

    async def go() -> str:
        try:
            with pytest.raises(PermanentDelivery):
                await channel.deliver(email("gone@example.com", "msg-1"))
            return (await channel.deliver(email("ada@example.com", "msg-2"))).provider_message_id
        finally:
            await channel.close()

    asyncio.run(go())

    assert [r.rcpt_tos for r in smtp_server.recorder.messages] == [["ada@example.com"]]
    assert channel.connections_opened == 1


def test_no_server_is_a_transient_connect_error() -> None:
    server = SmtpServer(host="127.0.0.1", port=free_port(), security="none", connect_attempts=2)
    channel = SmtpEmailChannel(server, sender_name="Acme", sender_address=SENDER)

    error = deliver_error(channel, email())

    assert isinstance(error, TransientDelivery)
    assert error.code == "smtp:connect"


def test_a_slow_server_is_a_transient_timeout(smtp_server: SmtpFixture) -> None:
    smtp_server.recorder.slow["slow@example.com"] = 2.0

    error = deliver_error(channel_for(smtp_server, timeout=0.3), email("slow@example.com"))

    assert isinstance(error, TransientDelivery)
    assert error.code == "smtp:timeout"


def test_losing_the_connection_after_the_body_was_sent_is_never_retried(
    smtp_server: SmtpFixture,
) -> None:
    smtp_server.recorder.hang_up_on_data.add("ada@example.com")

    error = deliver_error(channel_for(smtp_server), email())

    # The server got the message; resending could mail the customer twice.
    assert len(smtp_server.recorder.messages) == 1
    assert isinstance(error, UncertainDelivery)
    assert error.code == "smtp:unknown"


def test_login_uses_the_password(smtp_server: SmtpFixture) -> None:
    run_and_close(channel_for(smtp_server, username=USER, password=PASSWORD), email())

    assert len(smtp_server.recorder.messages) == 1


def test_a_refused_login_is_transient_and_never_shows_the_password(
    smtp_server: SmtpFixture,
) -> None:
    wrong = "wrong-password-also-secret"

    error = deliver_error(channel_for(smtp_server, username=USER, password=wrong), email())

    assert isinstance(error, TransientDelivery)
    assert error.code == "smtp:535"
    assert wrong not in str(error)
    assert smtp_server.recorder.messages == []


def test_bootstrap_builds_the_smtp_channel_with_the_password_from_the_environment(
    smtp_server: SmtpFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_SMTP__PASSWORD", PASSWORD)
    # As from the TOML file: a plain mapping, merged with the password from the environment.
    from_file: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'd.db'}",
        "sinks": {"email": "smtp", "directory": str(tmp_path / "sink")},
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_server.port,
            "security": "none",
            "username": USER,
        },
    }
    settings = Settings(**from_file)
    channel = file_channels(settings)[ChannelKind.EMAIL]
    assert isinstance(channel, SmtpEmailChannel)

    run_and_close(channel, email())

    assert len(smtp_server.recorder.messages) == 1
    assert PASSWORD not in repr(settings)
    assert "password" not in settings.model_dump()["smtp"]


def test_a_username_without_a_password_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(
        sinks=SinkSettings(email="smtp", directory=tmp_path),
        smtp=SmtpSettings(username=USER),
    )

    with pytest.raises(ConfigError) as caught:
        file_channels(settings)

    assert caught.value.key == "smtp.password"
