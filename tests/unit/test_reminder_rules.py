"""Reminder planning and delivery rules: send times across DST, which reminders, retries, subjects."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.core.calendar import BusinessCalendar
from pharmacy.reminders.rules import (
    MessageKind,
    OutboxState,
    PlannedMessage,
    classify_smtp_error,
    message_id,
    next_attempt_at,
    plan_refill_reminders,
    plan_renewal_notice,
    send_instant,
    should_give_up,
    subject_line,
)

CHICAGO = ZoneInfo("America/Chicago")
US = BusinessCalendar.default()
ZONES = [
    ZoneInfo(name)
    for name in (
        "America/Chicago", "America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "America/Phoenix",
        "UTC",
    )
]
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
hours = st.integers(min_value=8, max_value=19)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_enums_are_unchanged() -> None:
    assert [k.value for k in MessageKind] == [
        "reminder_early", "reminder_order_by", "reminder_overdue", "renewal_needed", "request_received",
        "request_approved", "request_declined", "renewal_in_progress", "order_ready", "order_shipped",
        "prescriber_renewal", "one_time_code", "auto_refill_requested",  # 0010 widened its CHECK
    ]
    assert [s.value for s in OutboxState] == ["pending", "sending", "sent", "failed", "cancelled"]


# -- send_instant ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "hour", "expected"),
    [
        (date(2026, 3, 7), 10, utc(2026, 3, 7, 16)),  # CST, UTC−6
        (date(2026, 3, 8), 10, utc(2026, 3, 8, 15)),  # the day clocks spring forward: CDT, UTC−5
        (date(2026, 3, 9), 8, utc(2026, 3, 9, 13)),
        (date(2026, 10, 31), 10, utc(2026, 10, 31, 15)),  # CDT
        (date(2026, 11, 1), 10, utc(2026, 11, 1, 16)),  # the day clocks fall back: CST again
        (date(2026, 11, 1), 19, utc(2026, 11, 2, 1)),  # 7 pm local is already tomorrow in UTC
        (date(2026, 12, 31), 19, utc(2027, 1, 1, 1)),  # and across the year end
    ],
)
def test_send_instant_chicago(day: date, hour: int, expected: datetime) -> None:
    result = send_instant(day, hour, CHICAGO)
    assert result == expected
    assert result.tzinfo is UTC


def test_send_instant_other_zones() -> None:
    assert send_instant(date(2026, 3, 29), 9, ZoneInfo("Europe/London")) == utc(2026, 3, 29, 8)  # BST starts
    assert send_instant(date(2026, 4, 5), 9, ZoneInfo("Australia/Sydney")) == utc(2026, 4, 4, 23)  # AEST again
    assert send_instant(date(2026, 6, 1), 10, ZoneInfo("Asia/Kolkata")) == datetime(2026, 6, 1, 4, 30, tzinfo=UTC)


@pytest.mark.parametrize("hour", [0, 7, 20, 23, -1, 24])
def test_never_at_night(hour: int) -> None:
    with pytest.raises(ValueError, match="never at night"):
        send_instant(date(2026, 3, 8), hour, CHICAGO)


@given(day=dates, hour=hours, tz=st.sampled_from(ZONES))
def test_send_instant_is_that_local_hour(day: date, hour: int, tz: ZoneInfo) -> None:
    instant = send_instant(day, hour, tz)
    assert instant.utcoffset() == timedelta(0)
    local = instant.astimezone(tz)
    assert (local.date(), local.hour, local.minute, local.second) == (day, hour, 0, 0)


# -- plan_refill_reminders -----------------------------------------------------------------

ORDER_BY = date(2026, 11, 23)  # a Monday


def plan(today: date, offsets: tuple[int, ...] = (7, 3, 0), **kwargs: object) -> list[tuple[str, MessageKind, date]]:
    params: dict[str, object] = {
        "order_by": ORDER_BY,
        "offsets_days": offsets,
        "overdue_after_days": 2,
        "hour": 10,
        "tz": CHICAGO,
        "today": today,
    }
    params.update(kwargs)
    return [(m.key, m.kind, m.local_day) for m in plan_refill_reminders(**params)]  # type: ignore[arg-type]


EARLY, ORDER, OVERDUE = MessageKind.REMINDER_EARLY, MessageKind.REMINDER_ORDER_BY, MessageKind.REMINDER_OVERDUE


def test_full_plan_well_ahead() -> None:
    messages = plan_refill_reminders(
        order_by=ORDER_BY, offsets_days=[7, 3, 0], overdue_after_days=2, hour=10, tz=CHICAGO, today=date(2026, 11, 1)
    )
    assert messages == [
        PlannedMessage(EARLY, date(2026, 11, 16), utc(2026, 11, 16, 16), "early_7"),
        PlannedMessage(EARLY, date(2026, 11, 20), utc(2026, 11, 20, 16), "early_3"),
        PlannedMessage(ORDER, date(2026, 11, 23), utc(2026, 11, 23, 16), "order_by"),
        PlannedMessage(OVERDUE, date(2026, 11, 25), utc(2026, 11, 25, 16), "overdue"),
    ]


def test_plan_across_spring_forward() -> None:
    messages = plan_refill_reminders(
        order_by=date(2026, 3, 9), offsets_days=[3, 0], overdue_after_days=2, hour=10, tz=CHICAGO,
        today=date(2026, 3, 1),
    )
    assert [m.send_at for m in messages] == [utc(2026, 3, 6, 16), utc(2026, 3, 9, 15), utc(2026, 3, 11, 15)]


def test_a_reminder_today_is_kept() -> None:
    assert plan(date(2026, 11, 16)) == [
        ("early_7", EARLY, date(2026, 11, 16)),
        ("early_3", EARLY, date(2026, 11, 20)),
        ("order_by", ORDER, ORDER_BY),
        ("overdue", OVERDUE, date(2026, 11, 25)),
    ]


def test_past_early_reminders_are_dropped() -> None:
    assert plan(date(2026, 11, 18)) == [
        ("early_3", EARLY, date(2026, 11, 20)),
        ("order_by", ORDER, ORDER_BY),
        ("overdue", OVERDUE, date(2026, 11, 25)),
    ]


def test_all_early_past_keeps_order_by() -> None:
    assert plan(date(2026, 11, 21)) == [("order_by", ORDER, ORDER_BY), ("overdue", OVERDUE, date(2026, 11, 25))]


def test_order_by_is_added_when_offsets_lack_zero_and_every_early_one_is_past() -> None:
    assert plan(date(2026, 11, 21), offsets=(7, 3)) == [
        ("order_by", ORDER, ORDER_BY),
        ("overdue", OVERDUE, date(2026, 11, 25)),
    ]
    # …but not while an early reminder is still ahead.
    assert plan(date(2026, 11, 1), offsets=(7, 3)) == [
        ("early_7", EARLY, date(2026, 11, 16)),
        ("early_3", EARLY, date(2026, 11, 20)),
        ("overdue", OVERDUE, date(2026, 11, 25)),
    ]


def test_no_offsets_still_reminds_on_the_order_by_day() -> None:
    assert plan(date(2026, 11, 1), offsets=()) == [
        ("order_by", ORDER, ORDER_BY),
        ("overdue", OVERDUE, date(2026, 11, 25)),
    ]


def test_past_order_by_keeps_the_overdue_reminder() -> None:
    assert plan(date(2026, 11, 24)) == [("overdue", OVERDUE, date(2026, 11, 25))]
    assert plan(date(2026, 11, 25)) == [("overdue", OVERDUE, date(2026, 11, 25))]


def test_past_overdue_day_plans_one_overdue_today() -> None:
    assert plan(date(2026, 12, 4)) == [("overdue", OVERDUE, date(2026, 12, 4))]


def test_duplicate_offsets_give_one_reminder() -> None:
    assert [key for key, _, _ in plan(date(2026, 11, 1), offsets=(3, 3, 0, 0))] == ["early_3", "order_by", "overdue"]


def test_calendar_moves_early_reminders_back_to_an_open_day() -> None:
    order_by = date(2026, 11, 30)  # Monday after Thanksgiving
    # 4 days before is Thanksgiving (26th) → Wednesday 25th; 1 day before is Sunday → Friday 27th.
    assert plan(date(2026, 11, 1), offsets=(4, 1, 0), order_by=order_by, calendar=US) == [
        ("early_4", EARLY, date(2026, 11, 25)),
        ("early_1", EARLY, date(2026, 11, 27)),
        ("order_by", ORDER, order_by),
        ("overdue", OVERDUE, date(2026, 12, 2)),
    ]
    # Without a calendar the days stay as they are.
    assert plan(date(2026, 11, 1), offsets=(4, 1, 0), order_by=order_by) == [
        ("early_4", EARLY, date(2026, 11, 26)),
        ("early_1", EARLY, date(2026, 11, 29)),
        ("order_by", ORDER, order_by),
        ("overdue", OVERDUE, date(2026, 12, 2)),
    ]


def test_a_moved_reminder_never_goes_before_today() -> None:
    # Today is Saturday 28th; early_2 (Sat 28th) would move back to Fri 27th, which is past: it stays today.
    assert plan(date(2026, 11, 28), offsets=(2, 0), order_by=date(2026, 11, 30), calendar=US) == [
        ("early_2", EARLY, date(2026, 11, 28)),
        ("order_by", ORDER, date(2026, 11, 30)),
        ("overdue", OVERDUE, date(2026, 12, 2)),
    ]


def test_never_two_on_one_day_the_more_urgent_stays() -> None:
    # Order by Tue 24 Nov 2026: early_4 = Fri 20; early_3 = Sat 21 → moved back to Fri 20. early_3 stays.
    assert plan(date(2026, 11, 1), offsets=(4, 3), order_by=date(2026, 11, 24), calendar=US) == [
        ("early_3", EARLY, date(2026, 11, 20)),
        ("overdue", OVERDUE, date(2026, 11, 26)),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offsets_days": (7, -1)},
        {"offsets_days": (7.0,)},
        {"overdue_after_days": 0},
        {"hour": 21},
    ],
)
def test_plan_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    params: dict[str, object] = {
        "order_by": ORDER_BY,
        "offsets_days": (7, 3, 0),
        "overdue_after_days": 2,
        "hour": 10,
        "tz": CHICAGO,
        "today": date(2026, 11, 1),
        **kwargs,
    }
    with pytest.raises(ValueError):
        plan_refill_reminders(**params)  # type: ignore[arg-type]


@given(
    order_by=dates,
    today_offset=st.integers(min_value=-70, max_value=70),
    offsets=st.lists(st.integers(min_value=0, max_value=60), max_size=5),
    overdue=st.integers(min_value=1, max_value=30),
    hour=hours,
    tz=st.sampled_from(ZONES),
    calendar=st.sampled_from([None, US]),
)
def test_plan_properties(
    order_by: date,
    today_offset: int,
    offsets: list[int],
    overdue: int,
    hour: int,
    tz: ZoneInfo,
    calendar: BusinessCalendar | None,
) -> None:
    today = order_by + timedelta(days=today_offset)
    messages = plan_refill_reminders(
        order_by=order_by, offsets_days=offsets, overdue_after_days=overdue, hour=hour, tz=tz, today=today,
        calendar=calendar,
    )
    days = [m.local_day for m in messages]
    assert all(day >= today for day in days)  # nothing in the past
    assert len(set(days)) == len(days)  # never two on one day
    assert len({m.key for m in messages}) == len(messages)
    assert [m.send_at for m in messages] == sorted(m.send_at for m in messages)
    for m in messages:
        local = m.send_at.astimezone(tz)
        assert (local.date(), local.hour) == (m.local_day, hour)
    # The patient always hears: exactly one overdue reminder, on its day or today if that has passed.
    overdue_messages = [m for m in messages if m.kind is OVERDUE]
    assert [m.local_day for m in overdue_messages] == [max(order_by + timedelta(days=overdue), today)]
    assert messages[-1].kind is OVERDUE
    # Early reminders only come before the order-by day, from the configured offsets.
    for m in messages:
        if m.kind is EARLY:
            offset = int(m.key.removeprefix("early_"))
            assert offset in offsets and offset > 0
            assert today <= m.local_day < order_by
            assert m.local_day <= order_by - timedelta(days=offset)
    has_order_by = any(m.kind is ORDER for m in messages)
    early_days = [order_by - timedelta(days=o) for o in offsets if o > 0]
    expected_order_by = order_by >= today and (0 in offsets or all(d < today for d in early_days))
    assert has_order_by is expected_order_by


# -- plan_renewal_notice ------------------------------------------------------------------------


def renewal(**changes: object) -> PlannedMessage | None:
    params: dict[str, object] = {
        "run_out": date(2026, 12, 2),
        "expiry_date": date(2027, 6, 1),
        "can_fill_again": False,
        "notice_days": 21,
        "hour": 10,
        "tz": CHICAGO,
        "today": date(2026, 11, 1),
        **changes,
    }
    return plan_renewal_notice(**params)  # type: ignore[arg-type]


def test_renewal_when_no_refills_remain() -> None:
    assert renewal() == PlannedMessage(MessageKind.RENEWAL_NEEDED, date(2026, 11, 11), utc(2026, 11, 11, 16), "renewal")


def test_renewal_when_the_prescription_expires_before_run_out() -> None:
    notice = renewal(can_fill_again=True, expiry_date=date(2026, 12, 1))
    assert notice is not None and notice.local_day == date(2026, 11, 11)


def test_no_renewal_when_refills_remain_and_expiry_is_later() -> None:
    assert renewal(can_fill_again=True) is None
    assert renewal(can_fill_again=True, expiry_date=date(2026, 12, 2)) is None  # expiring on run-out still allows a fill


def test_late_renewal_notice_goes_out_today() -> None:
    notice = renewal(today=date(2026, 11, 20))
    assert notice is not None and notice.local_day == date(2026, 11, 20)
    last_day = renewal(today=date(2026, 12, 2))
    assert last_day is not None and last_day.local_day == date(2026, 12, 2)


def test_no_renewal_notice_after_run_out() -> None:
    assert renewal(today=date(2026, 12, 3)) is None


def test_renewal_refuses_negative_notice() -> None:
    with pytest.raises(ValueError):
        renewal(notice_days=-1)


# -- retries ------------------------------------------------------------------------------------

NOW = utc(2026, 11, 23, 15)


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 0), (1, 60), (2, 120), (3, 240), (4, 480), (6, 1920), (7, 3600), (8, 3600), (10_000, 3600)],
)
def test_next_attempt_backoff(attempts: int, seconds: int) -> None:
    assert next_attempt_at(attempts, NOW) == NOW + timedelta(seconds=seconds)


def test_next_attempt_custom_base_and_cap() -> None:
    assert next_attempt_at(3, NOW, base_seconds=10, cap_seconds=30) == NOW + timedelta(seconds=30)
    assert next_attempt_at(2, NOW, base_seconds=10, cap_seconds=30) == NOW + timedelta(seconds=20)


def test_next_attempt_is_utc_and_needs_an_aware_now() -> None:
    chicago_now = NOW.astimezone(CHICAGO)
    result = next_attempt_at(1, chicago_now)
    assert result == NOW + timedelta(seconds=60)
    assert result.tzinfo is UTC
    assert next_attempt_at(1, NOW.astimezone(timezone(timedelta(hours=5)))) == NOW + timedelta(seconds=60)
    with pytest.raises(ValueError):
        next_attempt_at(1, datetime(2026, 11, 23, 15))  # naive on purpose
    with pytest.raises(ValueError):
        next_attempt_at(-1, NOW)
    with pytest.raises(ValueError):
        next_attempt_at(1, NOW, base_seconds=60, cap_seconds=30)


@given(attempts=st.integers(min_value=0, max_value=200))
def test_backoff_grows_and_stays_capped(attempts: int) -> None:
    delay = next_attempt_at(attempts, NOW) - NOW
    following = next_attempt_at(attempts + 1, NOW) - NOW
    assert timedelta(0) <= delay <= following <= timedelta(seconds=3600)
    if attempts >= 1:
        assert following in (2 * delay, timedelta(seconds=3600))


@pytest.mark.parametrize(
    ("code", "exc", "expected"),
    [
        (421, None, "transient"),  # service not available
        (450, "SMTPRecipientsRefused", "transient"),  # mailbox busy
        (451, None, "transient"),
        (452, None, "transient"),
        (550, "SMTPRecipientsRefused", "permanent"),  # no such mailbox
        (552, None, "permanent"),
        (554, "SMTPDataError", "permanent"),
        (535, "SMTPAuthenticationError", "permanent"),
        (None, "ConnectionRefusedError", "transient"),
        (None, "TimeoutError", "transient"),
        (None, "timeout", "transient"),
        (None, "SMTPServerDisconnected", "transient"),
        (None, "OSError", "transient"),
        (None, "SomethingNobodyExpected", "transient"),
        (None, None, "transient"),
        (250, None, "transient"),  # not an error code at all: unknown → transient
    ],
)
def test_classify_smtp_error(code: int | None, exc: str | None, expected: str) -> None:
    assert classify_smtp_error(code, exc) == expected


@pytest.mark.parametrize(
    ("attempts", "max_attempts", "expected"),
    [(0, 8, False), (7, 8, False), (8, 8, True), (9, 8, True), (1, 1, True)],
)
def test_should_give_up(attempts: int, max_attempts: int, expected: bool) -> None:
    assert should_give_up(attempts, max_attempts) is expected


def test_should_give_up_needs_a_real_limit() -> None:
    with pytest.raises(ValueError):
        should_give_up(0, 0)


# -- identities and subjects -------------------------------------------------------------------------


def test_message_id_is_deterministic_and_hides_the_key() -> None:
    first = message_id(12, "fill:12:early_7", "pharmacy.example")
    assert first == "<ldn.12.8d956ecf02dae43a@pharmacy.example>"
    assert message_id(12, "fill:12:early_7", "pharmacy.example") == first  # a retry carries the same id
    assert message_id(12, "fill:12:early_3", "pharmacy.example") != first
    assert message_id(13, "fill:12:early_7", "pharmacy.example") != first
    assert "fill" not in first


@pytest.mark.parametrize("domain", ["", "a b.example", "x@y.example", "evil>.example", "a\r\nBcc: x"])
def test_message_id_refuses_bad_domains(domain: str) -> None:
    with pytest.raises(ValueError):
        message_id(1, "k", domain)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (MessageKind.REMINDER_EARLY, "Riverside Compounding Pharmacy: refill reminder"),
        (MessageKind.REMINDER_ORDER_BY, "Riverside Compounding Pharmacy: refill reminder"),
        (MessageKind.REMINDER_OVERDUE, "Riverside Compounding Pharmacy: refill reminder"),
        (MessageKind.REQUEST_RECEIVED, "Riverside Compounding Pharmacy: your refill request"),
        (MessageKind.REQUEST_APPROVED, "Riverside Compounding Pharmacy: your refill request"),
        (MessageKind.REQUEST_DECLINED, "Riverside Compounding Pharmacy: your refill request"),
        (MessageKind.ORDER_READY, "Riverside Compounding Pharmacy: your order is ready"),
        (MessageKind.ORDER_SHIPPED, "Riverside Compounding Pharmacy: your order has shipped"),
        (MessageKind.RENEWAL_NEEDED, "Riverside Compounding Pharmacy: prescription renewal"),
        (MessageKind.RENEWAL_IN_PROGRESS, "Riverside Compounding Pharmacy: prescription renewal"),
        (MessageKind.PRESCRIBER_RENEWAL, "Riverside Compounding Pharmacy: renewal request"),
    ],
)
def test_subject_lines(kind: MessageKind, expected: str) -> None:
    assert subject_line("Riverside Compounding Pharmacy", kind) == expected


@pytest.mark.parametrize("kind", list(MessageKind))
def test_subjects_never_name_the_drug_or_the_condition(kind: MessageKind) -> None:
    subject = subject_line("Riverside Compounding Pharmacy", kind).lower()
    for word in ("naltrexone", "ldn", "sclerosis", " ms", "mg", "opioid", "capsule"):
        assert word not in subject


def test_subject_collapses_line_breaks_and_needs_a_name() -> None:
    assert subject_line("  Riverside\r\nBcc: someone@example.com ", MessageKind.ORDER_READY) == (
        "Riverside Bcc: someone@example.com: your order is ready"
    )
    assert subject_line("Riverside", "order_ready") == "Riverside: your order is ready"  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        subject_line(" \n ", MessageKind.ORDER_READY)
