"""120 simulated days through the real planner and sender: no message ever breaks a rule.

Hypothesis draws accounts in time zones with DST, half-hour offsets and multi-zone
countries without a zone, with holds, opt-outs, promises to pay and persons owning
several debts; the simulation plans and sends at irregular ticks; then every message that
went out is checked against the rules directly: inside the window in every candidate
zone, not on a holiday, within every cap in every rolling window, never during a hold.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.account_file import FLAG_COLUMNS
from dispatcher.bootstrap import bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.account import Account, Flag
from dispatcher.domain.strategy import ChannelKind
from dispatcher.holiday import is_holiday
from dispatcher.service.importer import import_accounts
from dispatcher.service.simulator import Sent, simulate
from dispatcher.zone import candidate_zones
from tests.conftest import settings_for, write_csv

PERSONS = {
    # person: (country, region, phone, zone choices, jurisdiction)
    0: ("US", "MA", "+16175550101", ["America/New_York", ""], "US-MA"),
    1: ("US", "", "+16175550102", ["", "America/Denver", "Pacific/Honolulu"], "US"),
    2: ("US", "WA", "+12065550103", ["America/Los_Angeles", ""], "US-WA"),
    3: ("GB", "", "+447400123456", ["Europe/London"], "UK"),
    4: ("CN", "", "+8613123456789", ["Asia/Shanghai"], "CN"),
    5: ("IN", "", "+918123456789", ["Asia/Kolkata"], "default"),
    6: ("AU", "", "+61412345678", ["Australia/Adelaide"], "default"),
}
FLAGS = list(FLAG_COLUMNS)

account_rows = st.lists(
    st.fixed_dictionaries(
        {
            "person": st.sampled_from(sorted(PERSONS)),
            "zone_pick": st.integers(0, 2),
            "due_offset": st.integers(-8, 200),
            "flag": st.one_of(st.none(), st.sampled_from(FLAGS)),
            "promise_days": st.one_of(st.none(), st.integers(0, 30)),
            "currency": st.sampled_from(["USD", "CNY", "GBP"]),
        }
    ),
    min_size=1,
    max_size=6,
)


def _row(i: int, spec: dict[str, object], start: datetime) -> dict[str, str]:
    country, region, phone, zones, jurisdiction = PERSONS[int(spec["person"])]  # type: ignore[call-overload]
    zone = zones[int(spec["zone_pick"]) % len(zones)]  # type: ignore[call-overload]
    due = start.date() - timedelta(days=int(spec["due_offset"]))  # type: ignore[call-overload]
    row = {
        "account_id": f"S-{i}",
        "full_name": f"Person {spec['person']}",
        "balance": "250.00",
        "currency": str(spec["currency"]),
        "due_date": due.isoformat(),
        "phone": phone,
        "email": f"person{spec['person']}@example.com",
        "address_line1": "1 Main St",
        "city": "Somewhere",
        "region": region,
        "postal_code": "12345",
        "country": country,
        "timezone": zone,
        "jurisdiction": jurisdiction,
    }
    if spec["flag"]:
        row[str(spec["flag"])] = "true"
    if spec["promise_days"] is not None:
        promise = start.date() + timedelta(days=int(spec["promise_days"]))  # type: ignore[call-overload]
        row["promise_to_pay_until"] = promise.isoformat()
    return row


def _broken_rules(sent: list[Sent], accounts: dict[str, Account], app_book) -> list[str]:  # type: ignore[no-untyped-def]
    problems: list[str] = []
    by_person: dict[str, list[Sent]] = defaultdict(list)
    for s in sent:
        account = accounts[s.account_id]
        channel = ChannelKind(s.channel)
        chain = app_book.chain(account.jurisdiction)
        what = f"{s.account_id} {s.stage}/{s.step} {s.channel} at {s.at.isoformat()}"
        for zone in candidate_zones(account):
            local = s.at.astimezone(ZoneInfo(zone))
            for pack in chain:
                windows = pack.windows_for(channel)
                if windows and not any(w.contains(local) for w in windows):
                    problems.append(f"{what}: outside {windows[0].id} in {zone} ({local:%a %H:%M})")
                for rule in pack.holidays:
                    calendar = account.country if rule.calendar == "account" else rule.calendar
                    if (
                        channel in rule.channels
                        and calendar
                        and is_holiday(calendar, account.region, local.date())
                    ):
                        problems.append(f"{what}: on a holiday ({rule.id}) in {zone}")
        blocking = {
            Flag.DECEASED,
            Flag.BANKRUPTCY,
            Flag.CEASE_AND_DESIST,
            Flag.DO_NOT_CONTACT,
            Flag.DISPUTE,
        }
        if account.flags & blocking:
            problems.append(f"{what}: sent despite {sorted(account.flags & blocking)}")
        if channel is ChannelKind.SMS and Flag.OPT_OUT_SMS in account.flags:
            problems.append(f"{what}: SMS after opt-out")
        if channel is ChannelKind.EMAIL and Flag.OPT_OUT_EMAIL in account.flags:
            problems.append(f"{what}: email after opt-out")
        promise = account.promise_to_pay_until
        if promise and s.at.astimezone(ZoneInfo(account.timezone)).date() <= promise:
            problems.append(f"{what}: during a promise to pay until {promise}")
        by_person[account.phone or account.account_id].append(s)
    for person_sent in by_person.values():
        account = accounts[person_sent[0].account_id]
        for pack in app_book.chain(account.jurisdiction):
            for cap in pack.caps:
                times = sorted(s.at for s in person_sent if ChannelKind(s.channel) in cap.channels)
                for i in range(len(times) - cap.limit):
                    if times[i + cap.limit] - times[i] < cap.window:
                        problems.append(
                            f"{cap.id}: {cap.limit + 1} messages within {cap.window} "
                            f"from {times[i].isoformat()}"
                        )
    return problems


@settings(max_examples=max(3, settings.default.max_examples // 30), deadline=None)
@given(
    specs=account_rows,
    start_hours=st.integers(0, 365 * 24),
    tick_minutes=st.integers(180, 720),
)
def test_no_simulated_message_breaks_a_rule(
    tmp_path_factory,
    specs: list[dict[str, object]],
    start_hours: int,
    tick_minutes: int,  # type: ignore[no-untyped-def]
) -> None:
    tmp = tmp_path_factory.mktemp("sim")
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=start_hours)
    app = bootstrap(settings_for(tmp), channels={k: MemoryChannel() for k in ChannelKind})
    app.store.create_schema()
    rows = [_row(i, spec, start) for i, spec in enumerate(specs)]
    report = import_accounts(
        app.store,
        write_csv(tmp / "a.csv", rows),
        now=start,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0, report.first_rejects
    result = simulate(app, start, 120, timedelta(minutes=tick_minutes))
    accounts = app.store.accounts(r["account_id"] for r in rows)
    problems = _broken_rules(result.sent, accounts, app.policies)
    assert problems == []
    # Nothing is sent twice for one key.
    keys = [(s.account_id, s.stage, s.step, s.channel) for s in result.sent]
    assert len(keys) == len(set(keys))


def test_the_simulation_sends_what_a_clean_account_is_owed(tmp_path: Path) -> None:
    """The property above must not pass by sending nothing: a clean account gets its ladder."""
    start = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    app = bootstrap(settings_for(tmp_path), channels={k: MemoryChannel() for k in ChannelKind})
    app.store.create_schema()
    row = _row(
        0,
        {
            "person": 0,
            "zone_pick": 0,
            "due_offset": -6,
            "flag": None,
            "promise_days": None,
            "currency": "USD",
        },
        start,
    )
    import_accounts(
        app.store,
        write_csv(tmp_path / "a.csv", [row]),
        now=start,
        default_timezone="America/New_York",
        default_region="US",
    )
    result = simulate(app, start, 120, timedelta(hours=3))
    went = sorted((s.stage, s.step, s.channel) for s in result.sent)
    assert ("pre_due", "day3", "sms") in went
    assert ("early", "day1", "sms") in went
    assert ("mid", "day1", "email") in went
    assert ("mid", "day15", "letter") in went
    assert ("late", "day1", "letter") in went
    assert all(s.at >= start for s in result.sent)
    assert date(2026, 3, 2) <= min(s.at.date() for s in result.sent)
