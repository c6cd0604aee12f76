"""Twilio's side of `dispatcher serve`, end to end: a real service process sends SMS through
the official client to tests/fake_twilio.py with a validity period, and the fake calls
the service's webhooks back, signed for the public URL (as through a proxy), with delivery
statuses and an inbound STOP; unsigned requests are refused."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.e2e.test_cli import run
from tests.e2e.test_serve import (
    TOKEN,
    fake,  # noqa: F401  (the fixture)
    free_port,
    loaded,
    serve_config,
    start,
    statuses,
    twilio_settings,
)
from tests.fake_twilio import FakeTwilio, post_signed

PUBLIC = "https://dispatcher.example"


def test_serve_takes_signed_twilio_callbacks_and_refuses_unsigned_ones(
    tmp_path: Path,
    fake: FakeTwilio,  # noqa: F811
) -> None:
    port = free_port()
    plain = serve_config(tmp_path, port)
    loaded(tmp_path, plain, 2)
    config = tmp_path / "serve-twilio.toml"
    config.write_text(
        plain.read_text().replace("[sinks]\n", '[sinks]\nsms = "twilio"\n')
        + twilio_settings(fake)
        + f'status_callback_url = "{PUBLIC}/webhooks/twilio/status"\n',
        encoding="utf-8",
    )
    served = start(tmp_path, config, port)
    try:
        served.wait_ready()
        deadline = time.monotonic() + 30
        while statuses(tmp_path)["sent"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert statuses(tmp_path)["sent"] == 2, served.log.read_text()
        # 11:00 in New York: ten hours of window left, all of which Twilio may use.
        periods = [int(r.form["ValidityPeriod"]) for r in fake.received]
        assert len(periods) == 2 and all(35_900 <= p <= 36_000 for p in periods), periods
        first = fake.created[0]

        base = served.url("")
        assert fake.send_status(first["sid"], "sent", deliver_to=base).status_code == 200
        assert fake.send_status(first["sid"], "delivered", deliver_to=base).status_code == 200
        assert fake.send_status(first["sid"], "sent", deliver_to=base).status_code == 200  # late
        forged = fake.send_status(first["sid"], "failed", deliver_to=base, token="not-the-token")
        assert forged.status_code == 403

        stop = {"From": "+16175551001", "To": "+18005550100", "Body": "Stop", "MessageSid": "SMx"}
        unsigned = post_signed(
            f"{PUBLIC}/webhooks/twilio/inbound", stop, TOKEN, deliver_to=base, signature_header=""
        )
        assert unsigned.status_code == 403
        answer = post_signed(f"{PUBLIC}/webhooks/twilio/inbound", stop, TOKEN, deliver_to=base)
        assert answer.status_code == 200 and answer.text.endswith("<Response />")
    finally:
        assert served.stop() == 0

    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        delivery = {
            sid: (account, status, state)
            for sid, account, status, state in db.execute(
                "SELECT provider_message_id, account_id, status, delivery_status FROM message"
            )
        }
        holds = list(db.execute("SELECT account_id, reason, source FROM hold"))
    account, status, state = delivery.pop(first["sid"])
    assert (status, state) == ("sent", "delivered")
    assert [(s, d) for _, s, d in delivery.values()] == [("sent", None)]
    assert holds == [("S-0001", "opted_out_sms", "inbound_sms")]

    history = run(tmp_path, "history", account, "--json", config=plain)
    assert history.returncode == 0, history.stderr
    story = json.loads(history.stdout)
    assert story["messages"][0]["delivery_status"] == "delivered"
    received = [a["detail"] for a in story["audit"] if a["event"] == "delivery_status_received"]
    assert [(d["status"], d["applied"]) for d in received] == [
        ("sent", True),
        ("delivered", True),
        ("sent", False),
    ]
    table = run(tmp_path, "history", account, config=plain)
    assert "delivery" in table.stdout and "delivered" in table.stdout
    # Phone numbers stay out of the service's log.
    assert "6175551001" not in served.log.read_text()
