"""Logs carry no personal data and no secrets, whichever way a value gets into a record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.log import MASK, Redactor, configure_logging

SECRET = "tw-auth-9f8e7d6c5b4a3921"
PASSWORD = "p@ss w/rd:42"


@contextmanager
def captured(*, json_lines: bool = True, secrets: Iterable[str] = ()) -> Iterator[io.StringIO]:
    """Configure logging into a buffer, then put the process's logging back as it was."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging(logging.DEBUG, json=json_lines, secrets=secrets, stream=stream)
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)
        structlog.reset_defaults()


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().split("\n") if line.strip()]


@pytest.mark.parametrize(
    ("key", "value", "masked"),
    [
        ("phone", "+16175550123", "+1***23"),
        ("phone", "+447911123456", "+44***56"),
        ("phone", "+8613800138000", "+86***00"),
        ("phone", "+1 (617) 555-0123", "+1***23"),
        ("phone", "617-555-0123", "***23"),
        ("phone", 16175550123, "***23"),
        ("phone", None, None),
        ("phone", "", ""),
        ("Phone", "+16175550123", "+1***23"),
        ("email", "jane@example.com", "j***@example.com"),
        ("email", "Jane.Doe+tag@mail.example.co.uk", "J***@mail.example.co.uk"),
        ("email", "j@example.com", "j***@example.com"),
        ("email", "j***@example.com", "***@example.com"),
        ("email", "not an email", MASK),
        ("recipient", "+16175550123", "+1***23"),
        ("recipient", "jane@example.com", "j***@example.com"),
        ("recipient", "1 Elm St, Boston MA 02110", MASK),
        ("to", "Jane Doe <jane@example.com>", "j***@example.com"),
        ("phone", "0@+16175550123", MASK),
        ("email", "jane@+16175550123", MASK),
        ("full_name", "Jane Doe", "J. D."),
        ("name", "Jean-Luc Picard", "J. P."),
        ("name", "王小明", "王."),
        ("name", "J", MASK),
        ("address_line1", "1 Elm St", MASK),
        ("address_line2", "Apt 4", MASK),
        ("address", {"line1": "1 Elm St", "city": "Boston"}, {"line1": MASK, "city": MASK}),
        ("city", "Boston", MASK),
        ("postal_code", "02110", MASK),
        ("password", "hunter2", MASK),
        ("auth_token", "abc", MASK),
        ("smtp_password", "hunter2", MASK),
        ("idempotency_key", "A-1|1|early|day1|sms", "A-1|1|early|day1|sms"),
        ("Authorization", "Basic QUMxOnRva2Vu", MASK),
        ("account_id", "A-1", "A-1"),
        ("attempt", 3, 3),
        ("held", True, True),
    ],
)
def test_values_under_personal_and_secret_keys_are_masked(
    key: str, value: object, masked: object
) -> None:
    assert Redactor()(None, "info", {key: value}) == {key: masked}


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("sent to +16175550123 at 09:00", "sent to +1***23 at 09:00"),
        ("call +1 (617) 555-0123 now", "call +1***23 now"),
        ("call (617) 555-0123 now", "call ***23 now"),
        ("glued:5+16175550123999", "glued:5+1***99"),
        (
            "<jane.doe@example.com>: Recipient address rejected",
            "<j***@example.com>: Recipient address rejected",
        ),
        ("mail +16175550123@sms.example.com", "mail +***@sms.example.com"),
        (
            "Account(account_id='A-1', full_name='Jane Doe', city='Boston')",
            "Account(account_id='A-1', full_name='J. D.', city='***')",
        ),
        ("{'name': 'Jane Doe', 'stage': 'early'}", "{'name': 'J. D.', 'stage': 'early'}"),
        ('{"address_line1": "1 Elm St"}', '{"address_line1": "***"}'),
        ("Authorization: Basic QUMxMjM6dG9rZW4=", "Authorization: Basic ***"),
        (
            "headers={'authorization': 'Bearer abc.def.ghi'}",
            "headers={'authorization': 'Bearer ***'}",
        ),
        ("retrying with Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "retrying with Bearer ***"),
        # What must stay readable: times with offsets, counts, ids, dates, amounts.
        (
            "plan at 2026-06-10T15:00:00+00:00: 1234 decisions, message 3f2a9c01d4e5",
            "plan at 2026-06-10T15:00:00+00:00: 1234 decisions, message 3f2a9c01d4e5",
        ),
        ("due 2026-06-10, balance 1,234.56 USD", "due 2026-06-10, balance 1,234.56 USD"),
        ("template early_day1.en-US v3", "template early_day1.en-US v3"),
    ],
)
def test_free_text_is_scrubbed_of_contact_data_and_credentials(text: str, scrubbed: str) -> None:
    assert Redactor().scrub(text) == scrubbed


def test_secrets_are_replaced_wherever_they_appear() -> None:
    redactor = Redactor([SECRET, PASSWORD, ""])
    assert redactor.scrub(f"token={SECRET}; again {SECRET}") == "token=***; again ***"
    # In a URL the password appears percent-encoded.
    assert redactor.scrub("smtp://bot:p%40ss%20w%2Frd%3A42@mail.example.com") == (
        "smtp://bot:***@mail.example.com"
    )
    # Inside a personal value, before the value is masked (else "p***@..." hides it badly).
    masked = redactor(None, "info", {"email": f"{PASSWORD}@example.com", "x": [SECRET]})
    assert PASSWORD not in str(masked) and "p@ss" not in str(masked)
    assert masked["x"] == [MASK]


def test_structlog_and_stdlib_records_render_as_masked_json() -> None:
    with captured(secrets=[SECRET]) as out:
        structlog.get_logger("dispatcher.sender").info(
            "message_sent",
            recipient="+16175550123",
            full_name="Jane Doe",
            account_id="A-1",
            note=f"token {SECRET}",
        )
        logging.getLogger("uvicorn.error").warning("webhook from %s rejected", "jane@example.com")
    sent, stdlib = records(out)
    assert sent["event"] == "message_sent"
    assert sent["level"] == "info" and sent["logger"] == "dispatcher.sender"
    assert (sent["recipient"], sent["full_name"], sent["account_id"]) == ("+1***23", "J. D.", "A-1")
    assert sent["note"] == "token ***"
    assert stdlib["event"] == "webhook from j***@example.com rejected"
    assert (stdlib["level"], stdlib["logger"]) == ("warning", "uvicorn.error")
    assert "timestamp" in stdlib


def test_a_secret_never_appears_even_in_a_traceback() -> None:
    def connect() -> None:
        raise ConnectionError(f"login failed for bot:{PASSWORD} token {SECRET}")

    def send() -> None:
        try:
            connect()
        except ConnectionError as exc:
            raise RuntimeError(f"smtp to jane@example.com with {SECRET} failed") from exc

    for json_lines in (True, False):
        with captured(json_lines=json_lines, secrets=[SECRET, PASSWORD]) as out:
            try:
                send()
            except RuntimeError:
                structlog.get_logger("dispatcher").exception("send_failed")
                logging.getLogger("apscheduler.executors").exception("job %s raised", SECRET)
        text = out.getvalue()
        assert "Traceback (most recent call last)" in text
        assert "ConnectionError: login failed for bot:*** token ***" in text
        assert SECRET not in text and PASSWORD not in text
        assert "jane@example.com" not in text


def test_objects_are_rendered_through_the_redactor() -> None:
    @dataclass
    class Contact:
        full_name: str
        phone: str
        email: str

    with captured() as out:
        structlog.get_logger().info(
            "loaded", contact=Contact("Jane Doe", "+16175550123", "jane@example.com")
        )
    [line] = records(out)
    assert str(line["contact"]).endswith(
        "Contact(full_name='J. D.', phone='+1***23', email='j***@example.com')"
    )


def test_a_mapping_keyed_by_contact_data_is_masked_too() -> None:
    with captured() as out:
        structlog.get_logger().info("caps", per_person={"+16175550123": 2, "jane@example.com": 1})
    [line] = records(out)
    assert line["per_person"] == {"+1***23": 2, "j***@example.com": 1}


def test_console_format_is_masked_as_well() -> None:
    with captured(json_lines=False, secrets=[SECRET]) as out:
        structlog.get_logger("dispatcher").info("sent", phone="+16175550123", token=SECRET)
    text = out.getvalue()
    assert "phone=+1***23" in text and "sent" in text
    assert "16175550123" not in text and SECRET not in text


def test_level_filters_records() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        configure_logging("WARNING", json=True, secrets=(), stream=stream)
        structlog.get_logger().info("quiet")
        logging.getLogger("apscheduler").info("quiet too")
        structlog.get_logger().warning("loud")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.captureWarnings(False)
        structlog.reset_defaults()
    assert [r["event"] for r in records(stream)] == ["loud"]


# -- the property: whatever the field, message or path, no phone or email gets out ----------

RESERVED = {"event", "level", "logger", "timestamp", "exc_info", "stack_info", "stacklevel"}
E164 = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
# "*" is the mask's own character: an address whose local part is made of it (or ends in
# it) cannot be told from one already masked, and no real mailbox looks like that.
EMAILS = st.emails().filter(lambda address: "*" not in address.rpartition("@")[0])
KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda k: k.lower() not in RESERVED
)
AROUND = st.text(max_size=12)


@given(
    contact=st.one_of(E164, EMAILS),
    key=st.one_of(KEYS, st.sampled_from(["phone", "email", "to", "name", "city", "note"])),
    before=AROUND,
    after=AROUND,
    where=st.sampled_from(["message", "field", "nested", "key", "stdlib", "exception"]),
)
def test_no_phone_number_or_email_survives(
    contact: str, key: str, before: str, after: str, where: str
) -> None:
    value = f"{before}{contact}{after}"
    with captured() as out:
        log = structlog.get_logger("dispatcher.property")
        if where == "message":
            log.info(value)
        elif where == "field":
            log.info("event_with_field", **{key: value})
        elif where == "nested":
            log.info("event_with_nested", data={key: [value, {"inner": value}]})
        elif where == "key":
            log.info("event_with_mapping", counts={value: 1})
        elif where == "stdlib":
            logging.getLogger("uvicorn.error").error("%s failed: %s", key, value)
        else:
            try:
                raise ValueError(value)
            except ValueError:
                log.exception("failed")
    text = out.getvalue()
    assert text, "nothing was logged"
    assert contact not in text
    # The JSON as parsed, too, in case an escape hid the value from the raw check.
    assert contact not in json.dumps(records(out), ensure_ascii=False)
