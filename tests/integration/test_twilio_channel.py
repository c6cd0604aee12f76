"""The Twilio SMS channel, driving the official client against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from dispatcher.bootstrap import file_channels
from dispatcher.channel import Outbound
from dispatcher.channel.twilio_sms import TwilioSmsChannel, build_twilio_client
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import ConfigError, DeliveryError, PermanentDelivery, TransientDelivery
from dispatcher.settings import Settings, SinkSettings, TwilioSettings
from tests.fake_twilio import FakeTwilio

SID = "AC" + "0" * 32
TOKEN = "test-auth-token-0123456789abcdef"
SERVICE = "MG" + "1" * 32
CALLBACK = "https://dispatcher.example/webhooks/twilio/status"
OK_NUMBER = "+15005550006"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


def sms(to: str = OK_NUMBER, message_id: str = "m-1") -> Outbound:
    return Outbound(
        message_id=message_id,
        account_id="A-1",
        channel=ChannelKind.SMS,
        recipient=to,
        body="Acme: your payment of $120.00 is due. Reply STOP to opt out.",
    )


def channel_for(
    fake: FakeTwilio,
    *,
    token: str = TOKEN,
    from_number: str = "",
    service: str = SERVICE,
    timeout: float = 5.0,
    base_url: str | None = None,
) -> TwilioSmsChannel:
    client = build_twilio_client(
        SID,
        SecretStr(token),
        timeout_seconds=timeout,
        base_url=base_url if base_url is not None else fake.base_url,
    )
    return TwilioSmsChannel(
        client,
        messaging_service_sid="" if from_number else service,
        from_number=from_number,
        status_callback_url=CALLBACK,
    )


def deliver_error(channel: TwilioSmsChannel, message: Outbound) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        asyncio.run(channel.deliver(message))
    return caught.value


def test_message_goes_through_the_messaging_service_and_the_sid_is_the_receipt(
    fake: FakeTwilio,
) -> None:
    receipt = asyncio.run(channel_for(fake).deliver(sms()))

    assert receipt.provider_message_id.startswith("SM")
    assert receipt.provider_message_id == fake.created[0]["sid"]
    assert receipt.artifact_path is None
    [request] = fake.received
    assert request.account_sid == SID
    assert request.form["To"] == OK_NUMBER
    assert request.form["Body"] == sms().body
    assert request.form["MessagingServiceSid"] == SERVICE
    assert request.form["StatusCallback"] == CALLBACK
    assert "From" not in request.form


def test_from_number_is_sent_when_there_is_no_messaging_service(fake: FakeTwilio) -> None:
    asyncio.run(channel_for(fake, from_number="+15005550000").deliver(sms()))

    [request] = fake.received
    assert request.form["From"] == "+15005550000"
    assert "MessagingServiceSid" not in request.form


def test_several_messages_share_one_client(fake: FakeTwilio) -> None:
    channel = channel_for(fake)

    async def batch() -> list[str]:
        receipts = await asyncio.gather(
            *(channel.deliver(sms(f"+1500555{i:04d}", f"m-{i}")) for i in range(5))
        )
        return [r.provider_message_id for r in receipts]

    sids = asyncio.run(batch())
    assert len(set(sids)) == 5
    assert sorted(r.form["To"] for r in fake.received) == [f"+1500555{i:04d}" for i in range(5)]


@pytest.mark.parametrize(
    ("status", "twilio_code", "kind", "code"),
    [
        (400, 21211, PermanentDelivery, "twilio:21211"),
        (400, 21614, PermanentDelivery, "twilio:21614"),
        (400, 21610, PermanentDelivery, "twilio:21610"),
        (429, 20429, TransientDelivery, "twilio:20429"),
        (503, 20503, TransientDelivery, "twilio:20503"),
        (500, 20500, TransientDelivery, "twilio:20500"),
        (400, 21408, PermanentDelivery, "twilio:21408"),
    ],
)
def test_twilio_errors_map_to_transient_or_permanent(
    fake: FakeTwilio,
    status: int,
    twilio_code: int,
    kind: type[DeliveryError],
    code: str,
) -> None:
    bad = "+15005550001"
    fake.errors[bad] = (status, twilio_code)

    error = deliver_error(channel_for(fake), sms(bad))

    assert type(error) is kind
    assert error.code == code
    assert str(twilio_code) in str(error)
    assert len(fake.received) == 1


def test_wrong_credentials_are_transient_and_never_show_the_token(fake: FakeTwilio) -> None:
    wrong = "wrong-token-which-must-stay-secret"

    error = deliver_error(channel_for(fake, token=wrong), sms())

    assert isinstance(error, TransientDelivery)
    assert error.code == "twilio:20003"
    assert wrong not in str(error)
    assert TOKEN not in str(error)
    assert fake.received == []


def test_a_slow_provider_is_a_transient_timeout(fake: FakeTwilio) -> None:
    fake.delays[OK_NUMBER] = 1.5

    error = deliver_error(channel_for(fake, timeout=0.3), sms())

    assert isinstance(error, TransientDelivery)
    assert error.code == "twilio:timeout"


def test_an_unreachable_provider_is_a_transient_connection_error(fake: FakeTwilio) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    error = deliver_error(channel_for(fake, base_url=f"http://127.0.0.1:{closed_port}"), sms())

    assert isinstance(error, TransientDelivery)
    assert error.code == "twilio:connection"


def twilio_settings(tmp_path: Path, **twilio: object) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        sinks=SinkSettings(sms="twilio", directory=tmp_path / "sink"),
        twilio=TwilioSettings.model_validate(twilio),
    )


def test_bootstrap_builds_the_twilio_channel_from_settings(
    fake: FakeTwilio, tmp_path: Path
) -> None:
    settings = twilio_settings(
        tmp_path,
        account_sid=SID,
        auth_token=TOKEN,
        from_number="+15005550000",
        status_callback_url=CALLBACK,
        base_url=fake.base_url,
    )

    channels = file_channels(settings)
    receipt = asyncio.run(channels[ChannelKind.SMS].deliver(sms()))

    assert isinstance(channels[ChannelKind.SMS], TwilioSmsChannel)
    assert receipt.provider_message_id == fake.created[0]["sid"]
    assert TOKEN not in repr(settings)
    assert "auth_token" not in settings.model_dump()["twilio"]


@pytest.mark.parametrize(
    ("missing", "key"),
    [
        ("account_sid", "twilio.account_sid"),
        ("auth_token", "twilio.auth_token"),
        ("from_number", "twilio.messaging_service_sid"),
    ],
)
def test_twilio_without_its_settings_is_a_config_error(
    tmp_path: Path, missing: str, key: str
) -> None:
    values = {"account_sid": SID, "auth_token": TOKEN, "from_number": "+15005550000"}
    del values[missing]

    with pytest.raises(ConfigError) as caught:
        file_channels(twilio_settings(tmp_path, **values))

    assert caught.value.key == key


def test_file_stays_the_default_sink(tmp_path: Path) -> None:
    settings = Settings(sinks=SinkSettings(directory=tmp_path))

    channels = file_channels(settings)

    assert type(channels[ChannelKind.SMS]).__name__ == "FileSmsSink"
    assert type(channels[ChannelKind.EMAIL]).__name__ == "FileEmailSink"


def test_the_validity_is_handed_to_twilio_as_validity_period_in_whole_seconds(
    fake: FakeTwilio,
) -> None:
    channel = channel_for(fake)
    cases = [
        (timedelta(seconds=1234.9), "1234"),  # rounded down: never past the window end
        (timedelta(hours=12), "36000"),  # Twilio keeps a message ten hours at most
        (timedelta(milliseconds=200), "1"),  # Twilio's least
    ]
    for i, (valid_for, _) in enumerate(cases):
        asyncio.run(channel.deliver(replace(sms(message_id=f"m-{i}"), valid_for=valid_for)))
    asyncio.run(channel.deliver(sms(message_id="m-none")))
    forms = [r.form for r in fake.received]
    assert [f.get("ValidityPeriod") for f in forms] == [want for _, want in cases] + [None]
