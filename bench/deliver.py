"""``python -m bench deliver``: what the SMS and email channels hand over per second.

Against the loopback fakes of the test suite (tests/fake_twilio.py for the official
Twilio client, aiosmtpd for SMTP), each served from a process of its own so the server
does not share the measuring process's interpreter. Two measurements:

- limits off: messages/s one process hands over, with the sender's concurrency;
- a limit of R/s set: the rate measured over a window of ``--seconds``, and the most
  taken in any one second of it, against R.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

from dispatcher.channel import Outbound, Receipt
from dispatcher.channel.rate import rate_limit
from dispatcher.channel.smtp import SmtpEmailChannel, SmtpServer
from dispatcher.channel.twilio_sms import TwilioSmsChannel, build_twilio_client
from dispatcher.domain.strategy import ChannelKind

SID = "AC" + "0" * 32
TOKEN = "bench-token-0123456789"
BODY = "Acme: your payment of $120.00 is due. Pay at acme.example/p. Reply STOP to opt out."


def _serve_twilio(ready: Any) -> None:
    from tests.fake_twilio import FakeTwilio

    fake = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    ready.put(fake.base_url)
    while True:
        time.sleep(3600)


def _serve_smtp(ready: Any) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.put(port)
    while True:
        time.sleep(3600)


def _start(target: Callable[[Any], None]) -> tuple[multiprocessing.Process, Any]:
    ready: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=target, args=(ready,), daemon=True)
    process.start()
    return process, ready.get(timeout=30)


def _message(i: int, channel: ChannelKind) -> Outbound:
    return Outbound(
        message_id=f"bench-{i:08d}",
        account_id=f"A-{i}",
        channel=channel,
        recipient=f"+1617{2_000_000 + i:07d}"
        if channel is ChannelKind.SMS
        else f"p{i}@example.com",
        body=BODY,
        subject="Your payment is due",
    )


async def _pump(
    deliver: Callable[[Outbound], Awaitable[Receipt]],
    channel: ChannelKind,
    concurrency: int,
    *,
    count: int | None = None,
    seconds: float | None = None,
) -> list[float]:
    """Deliver with ``concurrency`` in flight, ``count`` messages or for ``seconds``;
    returns the monotonic time each hand-over completed."""
    done: list[float] = []
    start = time.monotonic()
    numbers = iter(range(10**9))

    async def worker() -> None:
        for i in numbers:
            if count is not None and i >= count:
                return
            if seconds is not None and time.monotonic() - start >= seconds:
                return
            await deliver(_message(i, channel))
            done.append(time.monotonic())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _twilio(base_url: str, rate: float) -> TwilioSmsChannel:
    client = build_twilio_client(SID, SecretStr(TOKEN), timeout_seconds=15, base_url=base_url)
    return TwilioSmsChannel(client, from_number="+15005550000", rate=rate_limit(rate))


def _smtp(port: int, rate: float) -> SmtpEmailChannel:
    server = SmtpServer(host="127.0.0.1", port=port, security="none")
    return SmtpEmailChannel(
        server, sender_name="Acme", sender_address="collections@acme.example", rate=rate_limit(rate)
    )


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):,.1f} / median {statistics.median(values):,.1f} / max {max(values):,.1f}"
    )


def _busiest_second(times: list[float]) -> int:
    """The most hand-overs completed in any one-second window."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


async def _run(
    channel: Any,
    kind: ChannelKind,
    concurrency: int,
    *,
    count: int | None = None,
    seconds: float | None = None,
) -> list[float]:
    try:
        return await _pump(channel.deliver, kind, concurrency, count=count, seconds=seconds)
    finally:
        if hasattr(channel, "close"):
            await channel.close()


def deliver(messages: int, repeat: int, rate: float, seconds: float, concurrency: int) -> None:
    twilio_process, base_url = _start(_serve_twilio)
    smtp_process, port = _start(_serve_smtp)
    try:
        for kind, build in (
            (ChannelKind.SMS, lambda r: _twilio(base_url, r)),
            (ChannelKind.EMAIL, lambda r: _smtp(port, r)),
        ):
            rates = []
            for _ in range(repeat):
                started = time.monotonic()
                done = asyncio.run(_run(build(0), kind, concurrency, count=messages))
                rates.append(len(done) / (done[-1] - started))
            print(f"{kind.value}, no limit, {messages:,} messages: messages/s  {_spread(rates)}")
            measured, busiest = [], []
            for _ in range(repeat):
                started = time.monotonic()
                done = asyncio.run(_run(build(rate), kind, concurrency, seconds=seconds))
                measured.append(len(done) / (done[-1] - started))
                busiest.append(float(_busiest_second(done)))
            print(
                f"{kind.value}, limit {rate:g}/s over {seconds:g} s: measured/s  "
                f"{_spread(measured)}; most in one second  {_spread(busiest)}"
            )
    finally:
        twilio_process.terminate()
        smtp_process.terminate()
