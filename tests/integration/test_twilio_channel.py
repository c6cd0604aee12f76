"""The Twilio SMS channel, driving the official client against a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import base64
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from pydantic import SecretStr
from twilio.rest import Client

from dispatcher.bootstrap import file_channels
from dispatcher.channel import Found, Handover, NotFound, Outbound, Unknown, twilio_sms
from dispatcher.channel.rate import RateLimit
from dispatcher.channel.twilio_sms import TwilioSmsChannel, build_twilio_client
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import (
    ConfigError,
    DeliveryError,
    PermanentDelivery,
    TransientDelivery,
    UncertainDelivery,
)
from dispatcher.settings import SendSettings, Settings, SinkSettings, TwilioSettings
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


BODY = "Acme: your payment of $120.00 is due. Reply STOP to opt out."


def sms(to: str = OK_NUMBER, message_id: str = "m-1", body: str = BODY) -> Outbound:
    return Outbound(
        message_id=message_id,
        account_id="A-1",
        channel=ChannelKind.SMS,
        recipient=to,
        body=body,
    )


def handover(
    *,
    body: str = BODY,
    claimed_at: datetime | None = None,
    known: set[str] | None = None,
) -> Handover:
    return Handover(
        message_id="m-1",
        recipient=OK_NUMBER,
        body=body,
        claimed_at=claimed_at or datetime.now(UTC) - timedelta(seconds=5),
        known_ids=frozenset(known or ()),
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
    # Our message id rides on the status callback, so a callback names its message.
    assert request.form["StatusCallback"] == CALLBACK + "?mid=m-1"
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
    ("status", "twilio_code", "kind", "code", "hold"),
    [
        (400, 21211, PermanentDelivery, "twilio:21211", "invalid_phone"),
        (400, 21614, PermanentDelivery, "twilio:21614", "invalid_phone"),
        (400, 21610, PermanentDelivery, "twilio:21610", "opted_out_sms"),
        (429, 20429, TransientDelivery, "twilio:20429", None),
        (503, 20503, TransientDelivery, "twilio:20503", None),
        (500, 20500, TransientDelivery, "twilio:20500", None),
        (400, 21408, PermanentDelivery, "twilio:21408", None),
    ],
)
def test_twilio_errors_map_to_transient_or_permanent_and_the_hold_they_call_for(
    fake: FakeTwilio,
    status: int,
    twilio_code: int,
    kind: type[DeliveryError],
    code: str,
    hold: str | None,
) -> None:
    bad = "+15005550001"
    fake.errors[bad] = (status, twilio_code)

    error = deliver_error(channel_for(fake), sms(bad))

    assert type(error) is kind
    assert error.code == code
    assert error.hold == hold
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


def test_a_provider_that_does_not_answer_in_time_may_have_the_message(fake: FakeTwilio) -> None:
    fake.delays[OK_NUMBER] = 1.5

    error = deliver_error(channel_for(fake, timeout=0.3), sms())

    # The request went out: Twilio creates the message after we stopped waiting.
    assert isinstance(error, UncertainDelivery)
    assert error.code == "twilio:timeout"
    deadline = time.monotonic() + 5
    while not fake.created and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.created) == 1


def test_a_connection_lost_before_the_answer_is_uncertain_and_the_lookup_finds_it(
    fake: FakeTwilio,
) -> None:
    fake.drop.add(OK_NUMBER)
    channel = channel_for(fake)

    error = deliver_error(channel, sms())
    found = asyncio.run(channel.lookup(handover()))

    assert isinstance(error, UncertainDelivery)
    assert error.code == "twilio:connection"
    [created] = fake.created
    assert found == Found(provider_message_id=created["sid"])
    assert fake.lookups[-1]["To"] == OK_NUMBER


def test_a_message_twilio_never_got_is_not_found(fake: FakeTwilio) -> None:
    channel = channel_for(fake)
    asyncio.run(channel.deliver(sms(body="another reminder")))

    assert asyncio.run(channel.lookup(handover())) == NotFound()


def test_lookup_skips_messages_already_recorded_for_another_of_ours(fake: FakeTwilio) -> None:
    channel = channel_for(fake)
    first = asyncio.run(channel.deliver(sms())).provider_message_id

    assert asyncio.run(channel.lookup(handover(known={first}))) == NotFound()
    assert asyncio.run(channel.lookup(handover())) == Found(first)


def test_lookup_ignores_messages_created_before_the_claim(fake: FakeTwilio) -> None:
    channel = channel_for(fake)
    asyncio.run(channel.deliver(sms()))

    later = datetime.now(UTC) + timedelta(minutes=10)
    assert asyncio.run(channel.lookup(handover(claimed_at=later))) == NotFound()


def test_a_message_still_queued_at_twilio_is_found(fake: FakeTwilio) -> None:
    fake.unsent = True  # no date_sent yet: a DateSent filter would miss it
    channel = channel_for(fake)
    sid = asyncio.run(channel.deliver(sms())).provider_message_id

    assert asyncio.run(channel.lookup(handover())) == Found(sid)


def test_smart_encoded_text_still_matches(fake: FakeTwilio) -> None:
    channel = channel_for(fake)
    sid = asyncio.run(channel.deliver(sms(body="It's due - pay today"))).provider_message_id

    found = asyncio.run(channel.lookup(handover(body="It\u2019s due \u2013 pay today")))

    assert found == Found(sid)


def test_lookup_during_an_outage_is_unknown_and_nothing_is_created(fake: FakeTwilio) -> None:
    fake.outage = True
    channel = channel_for(fake)

    error = deliver_error(channel, sms())
    looked = asyncio.run(channel.lookup(handover()))

    assert isinstance(error, TransientDelivery)
    assert error.code == "twilio:20503"
    assert isinstance(looked, Unknown)
    assert fake.created == []


def test_the_fake_lists_in_twilios_page_shape_with_date_filters(fake: FakeTwilio) -> None:
    channel = channel_for(fake)
    for i in range(3):
        asyncio.run(channel.deliver(sms(body=f"reminder {i}")))
    client = build_twilio_client(SID, SecretStr(TOKEN), timeout_seconds=5, base_url=fake.base_url)
    today = datetime.now(UTC).date()

    listed = client.messages.list(to=OK_NUMBER, page_size=2)
    since_today = client.messages.list(to=OK_NUMBER, date_sent_after=datetime.now(UTC))
    tomorrow = client.messages.list(date_sent_after=datetime.now(UTC) + timedelta(days=1))
    other = client.messages.list(to="+15005559999")

    assert [m.body for m in listed] == ["reminder 2", "reminder 1", "reminder 0"]  # 2 pages
    assert len(since_today) == 3
    assert all(m.date_sent.date() == today for m in since_today)
    assert tomorrow == []
    assert other == []


def test_the_fake_holds_every_connection_of_a_burst_while_it_lags(fake: FakeTwilio) -> None:
    """Three `serve` instances of 8 concurrent sends open 24 connections at once. While the
    fake lags (a loaded machine), the kernel must hold them all and the fake answer each:
    with socketserver's backlog of 5, Linux dropped or reset some, and a request the fake
    never read is an uncertain hand-over to the channel, its message `sending` for the
    15-minute lease (what made tests/e2e/test_serve_cluster.py time out in CI)."""
    numbers = [f"+1500555{i:04d}" for i in range(48)]
    url = urlsplit(fake.base_url)
    fake.pause()
    burst = [socket.socket() for _ in numbers]
    try:
        for sock in burst:
            sock.setblocking(False)
            sock.connect_ex((url.hostname, url.port))
        # Nothing accepts while paused: a handshake dropped now would never complete.
        waiting = set(burst)
        deadline = time.monotonic() + 10
        while waiting and time.monotonic() < deadline:
            _, connected, _ = select.select([], list(waiting), [], 0.5)
            waiting -= set(connected)
        assert len(waiting) == 0, f"{len(waiting)} of {len(burst)} connections not taken"
        for sock, number in zip(burst, numbers, strict=True):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            sock.settimeout(10)
            sock.sendall(raw_create(number))
        fake.resume()
        answers = [status_of(sock) for sock in burst]
    finally:
        for sock in burst:
            sock.close()

    assert answers == [201] * len(numbers)
    assert sorted(m["to"] for m in fake.created) == numbers


def raw_create(to: str) -> bytes:
    """A Message create request as the client sends it once its connection is made."""
    body = urlencode({"To": to, "Body": BODY, "MessagingServiceSid": SERVICE})
    auth = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    return (
        f"POST /2010-04-01/Accounts/{SID}/Messages.json HTTP/1.1\r\n"
        f"Host: api.twilio.com\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()


def status_of(sock: socket.socket) -> int:
    """The HTTP status of the answer on ``sock`` (read to the end: the fake closes)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return int(answer.split(b" ", 2)[1])


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


def test_a_lease_not_well_above_the_timeout_is_a_config_error(tmp_path: Path) -> None:
    # Reconciliation reads "not at Twilio" as "never arrived" only when no request of the
    # interrupted worker can still be under way.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        sinks=SinkSettings(sms="twilio", directory=tmp_path / "sink"),
        twilio=TwilioSettings(
            account_sid=SID, auth_token=SecretStr(TOKEN), from_number="+15005550000"
        ),
        send=SendSettings(lease_seconds=30),
    )

    with pytest.raises(ConfigError) as caught:
        file_channels(settings)

    assert caught.value.key == "send.lease_seconds"


def test_the_segment_rate_is_built_from_settings(fake: FakeTwilio, tmp_path: Path) -> None:
    settings = twilio_settings(
        tmp_path,
        account_sid=SID,
        auth_token=TOKEN,
        from_number="+15005550000",
        base_url=fake.base_url,
        segments_per_second=3,
    )

    channel = file_channels(settings)[ChannelKind.SMS]

    assert isinstance(channel, TwilioSmsChannel)
    assert channel.rate is not None and channel.rate.per_second == 3
    unlimited = file_channels(
        twilio_settings(tmp_path, account_sid=SID, auth_token=TOKEN, from_number="+15005550000")
    )[ChannelKind.SMS]
    assert isinstance(unlimited, TwilioSmsChannel) and unlimited.rate is None


def test_time_waited_for_the_send_rate_comes_off_the_validity(fake: FakeTwilio) -> None:
    """Rule sms.validity.window under a rate limit: the sender counts the validity before
    the bucket's wait, so the channel hands over only what is left after it."""
    channel = channel_for(fake)
    channel.rate = RateLimit(1.0)  # one now, then one a second
    ten_minutes = timedelta(seconds=600.5)  # whole seconds handed over: 600, then 599

    async def four() -> None:
        for i in range(3):
            await channel.deliver(replace(sms(message_id=f"r-{i}"), valid_for=ten_minutes))
        # Waits about a second for its turn, with less than that left of its window.
        late = replace(sms(message_id="r-late"), valid_for=timedelta(seconds=0.5))
        with pytest.raises(TransientDelivery, match="window closed while the message waited"):
            await channel.deliver(late)

    asyncio.run(four())

    periods = [int(r.form["ValidityPeriod"]) for r in fake.received]
    # The first went at once; each of the others waited about a second for its turn.
    assert len(periods) == 3 and periods[0] == 600 and max(periods[1:]) <= 599


# --- Concurrent deliveries share one Twilio client ---------------------------------------
# The stock TwilioHttpClient stores each response on itself and returns it from there; two
# threads can interleave between the two steps. _Interleaving forces that interleaving:
# storing a response waits until the other thread has stored its own.


class _Interleaving(twilio_sms.BaseUrlHttpClient):  # type: ignore[misc]
    barrier = threading.Barrier(2, timeout=10)

    @property
    def _test_only_last_response(self) -> object:
        return self.__dict__.get("_last")

    @_test_only_last_response.setter
    def _test_only_last_response(self, value: object) -> None:
        self.__dict__["_last"] = value
        if value is not None:
            self.barrier.wait()


def _two_at_once(client: Client) -> dict[str, str]:
    """Body sent → body of the resource each thread got back, created side by side."""
    _Interleaving.barrier.reset()

    def create(body: str) -> tuple[str, str]:
        resource = client.messages.create(to=OK_NUMBER, body=body, messaging_service_sid=SERVICE)
        return body, str(resource.body)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(create, ["first message", "second message"]))


def test_a_shared_stock_http_client_can_hand_a_thread_another_threads_response(
    fake: FakeTwilio,
) -> None:
    """The hazard itself, so the next test is known to catch it."""
    shared = _Interleaving(fake.base_url, timeout=5, logger=logging.getLogger("test"))
    got = _two_at_once(Client(SID, TOKEN, http_client=shared))
    assert len(set(got.values())) == 1  # both threads got the same one of the two


def test_each_delivery_thread_gets_its_own_response(
    fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_twilio_client gives each thread its own HTTP client (PerThreadHttpClient), so
    a message is never recorded with another message's SID or outcome."""
    monkeypatch.setattr(twilio_sms, "BaseUrlHttpClient", _Interleaving)
    client = build_twilio_client(SID, SecretStr(TOKEN), timeout_seconds=5, base_url=fake.base_url)
    got = _two_at_once(client)
    assert got == {"first message": "first message", "second message": "second message"}
    assert len(fake.created) == 2
