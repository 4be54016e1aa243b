"""Reminder planning through the real services, on the real business calendar.

Each test dispenses a fill the way the pharmacy does (start → verify → compound → check →
release → dispense) on a chosen day and checks the outbox rows planned for it: the dates
follow docs/domain.md "Refill timing" (run-out = dispensed + days supply; ready-by = run-out −
shipping − 2 buffer days, on an open day; order-by = ready-by − 2 business days; reminders 7
and 3 days before order-by (moved back to an open day), on it, and 2 days after), sent at
10:00 in America/Chicago whatever the season.
"""
from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask

from pharmacy.compounding.models import Formula, Order
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core.context import business_calendar
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.refills.models import RenewalRequest
from pharmacy.refills.rules import RenewalState, RequestSource
from pharmacy.reminders import planning, services
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import OutboxState
from pharmacy.supply import services as supply_services
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes as changes
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.factories import actor, run_order_to, world

CHICAGO = ZoneInfo("America/Chicago")


def morning(day: date) -> datetime:
    """09:00 at the pharmacy on `day`, as the UTC instant the clock holds."""
    return datetime(day.year, day.month, day.day, 9, tzinfo=CHICAGO).astimezone(UTC)


def ten_am(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 10, tzinfo=CHICAGO).astimezone(UTC)


def dispense(staff: dict, clock: Any, day: date | None = None, **overrides: Any) -> tuple[dict[str, Any], Order]:
    """A new patient's first fill, dispensed (as pickup) at 09:00 on `day`; committed."""
    if day is not None:
        clock.set(morning(day))
    w = world(staff, **overrides)
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, order.id, "dispensed")
    db.session.commit()
    return w, order


def plan_of(order_id: int, *, states: tuple[OutboxState, ...] = (OutboxState.PENDING,)) -> dict[str, datetime]:
    """{"early_7": due_at, …} for the order's reminder rows in the given states."""
    db.session.expire_all()
    rows = db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.order_id == order_id,
                                       OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)),
                                       OutboxMessage.state.in_(states))
    ).scalars()
    return {row.dedupe_key.rsplit(":", 1)[-1]: row.due_at for row in rows}


def rows_of(order_id: int) -> list[OutboxMessage]:
    db.session.expire_all()
    return list(db.session.execute(
        sa.select(OutboxMessage).where(OutboxMessage.order_id == order_id,
                                       OutboxMessage.kind.in_(list(planning.REMINDER_KINDS)))
        .order_by(OutboxMessage.id)
    ).scalars())


def expected(**days: date) -> dict[str, datetime]:
    return {key: ten_am(day) for key, day in days.items()}


# ---- the calendar: weekends, holidays, month ends ---------------------------------------------------------------


def test_a_fill_gets_reminders_before_on_and_after_its_order_by_date(app_ctx: Flask, clock: Any,
                                                                     staff: dict) -> None:
    # Dispensed Monday 23 Nov 2026 (the clock's start), 30 days → last day covered Tue 22 Dec (first without:
    # Wed 23); ready by Mon 21 Dec; order by Thu 17 Dec (2 business days earlier).
    _, order = dispense(staff, clock)

    assert order.run_out_date == date(2026, 12, 22)
    assert plan_of(order.id) == expected(
        early_7=date(2026, 12, 10), early_3=date(2026, 12, 14), order_by=date(2026, 12, 17),
        overdue=date(2026, 12, 19),  # a Saturday: the overdue notice is for the patient, not the bench
    )
    # 10:00 CST is 16:00 UTC in December.
    assert {t.hour for t in plan_of(order.id).values()} == {16}


def test_thanksgiving_and_a_weekend_move_the_dates_earlier(app_ctx: Flask, clock: Any, staff: dict) -> None:
    assert not business_calendar().is_open(date(2026, 11, 26))  # Thanksgiving Day
    # Dispensed Mon 2 Nov → runs out Wed 2 Dec; ready by Mon 30 Nov; counting back 2 business days
    # skips Thanksgiving (Thu 26): order by Wed 25 Nov, not Thu 26.
    _, order = dispense(staff, clock, date(2026, 11, 2))

    assert plan_of(order.id) == expected(
        early_7=date(2026, 11, 18),
        early_3=date(2026, 11, 20),  # Sun 22 Nov → the Friday before: more notice, and someone answers the phone
        order_by=date(2026, 11, 25),
        overdue=date(2026, 11, 27),
    )


def test_month_end_and_february(app_ctx: Flask, clock: Any, staff: dict) -> None:
    # Dispensed Fri 29 Jan 2027 → covered through Sat 27 Feb, first day without Sun 28 Feb (February has 28
    # days); ready by Fri 26 Feb; order by Wed 24 Feb.
    _, order = dispense(staff, clock, date(2027, 1, 29))

    assert order.run_out_date == date(2027, 2, 27)
    assert plan_of(order.id) == expected(
        early_7=date(2027, 2, 17), early_3=date(2027, 2, 19),  # Sun 21 Feb → Fri 19 Feb
        order_by=date(2027, 2, 24), overdue=date(2027, 2, 26),
    )


# ---- daylight saving time: the local hour stays ---------------------------------------------------------------


def test_reminders_across_the_fall_back_keep_ten_in_the_morning(app_ctx: Flask, clock: Any, staff: dict) -> None:
    # Dispensed Wed 7 Oct 2026 → runs out Fri 6 Nov; ready by Wed 4 Nov; order by Mon 2 Nov.
    # Chicago falls back on Sun 1 Nov: 10:00 is 15:00 UTC before, 16:00 UTC after.
    _, order = dispense(staff, clock, date(2026, 10, 7))

    plan = plan_of(order.id)
    assert plan == {
        "early_7": datetime(2026, 10, 26, 15, tzinfo=UTC),
        "early_3": datetime(2026, 10, 30, 15, tzinfo=UTC),
        "order_by": datetime(2026, 11, 2, 16, tzinfo=UTC),
        "overdue": datetime(2026, 11, 4, 16, tzinfo=UTC),
    }
    assert {t.astimezone(CHICAGO).hour for t in plan.values()} == {10}


def test_reminders_across_the_spring_forward_keep_ten_in_the_morning(app_ctx: Flask, clock: Any,
                                                                     staff: dict) -> None:
    # Dispensed Tue 16 Feb 2027 → runs out Thu 18 Mar; ready by Tue 16 Mar; order by Fri 12 Mar.
    # Chicago springs forward on Sun 14 Mar 2027 — the very day of the overdue notice.
    _, order = dispense(staff, clock, date(2027, 2, 16))

    plan = plan_of(order.id)
    assert plan == {
        "early_7": datetime(2027, 3, 5, 16, tzinfo=UTC),
        "early_3": datetime(2027, 3, 9, 16, tzinfo=UTC),
        "order_by": datetime(2027, 3, 12, 16, tzinfo=UTC),
        "overdue": datetime(2027, 3, 14, 15, tzinfo=UTC),  # 10:00 CDT
    }
    assert {t.astimezone(CHICAGO).hour for t in plan.values()} == {10}


# ---- titration, shipping, opt-outs, renewals --------------------------------------------------------------------


def test_titration_fills_are_planned_from_each_fills_own_supply(app_ctx: Flask, clock: Any, staff: dict) -> None:
    ph = actor(staff["pharmacist"])
    f = factories.formula("LDN-CAP-1.5", strength="1.5")
    doc = factories.prescriber()
    p = factories.patient(ph)
    rx = factories.prescription(ph, p.id, f.id, doc.id, dose_mg=Decimal("4.5"), titration=[
        {"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 14}])
    w = {"formula": f, "prescriber": doc, "patient": p, "rx": rx, "pharmacist": ph,
         "pharmacist2": actor(staff["pharmacist2"]), "technician": actor(staff["technician"])}
    first = order_flow.start_fill(ph, rx.id)
    # 14 days × 1 capsule + 14 days × 2 + 2 days × 3 at the target dose: the titration sets the quantity.
    assert (first.quantity, first.days_supply) == (Decimal(48), 30)
    run_order_to(w, first.id, "dispensed")
    db.session.commit()
    assert plan_of(first.id)["order_by"] == ten_am(date(2026, 12, 17))

    # On the order-by day the patient asks; the refill is approved, made and dispensed that day.
    clock.set(morning(date(2026, 12, 17)))
    req = refill_flow.request(w["technician"], rx.id, source=RequestSource.STAFF).request
    second = refill_flow.approve(ph, req.id)
    run_order_to(w, second.id, "dispensed")
    db.session.commit()

    assert plan_of(first.id) == {}  # the first fill's reminders are done with
    assert (second.fill_number, second.quantity) == (1, Decimal(90))  # the maintenance dose from now on
    # Dispensed early on Thu 17 Dec, while the first supply lasts through Tue 22 Dec: its 30 days follow it
    # (an early fill extends the run-out, it does not restart it) → covered through Thu 21 Jan 2027, first
    # day without Fri 22 Jan; ready by Wed 20 Jan; 2 business days before, Martin Luther King Day (Mon 18)
    # skipped → order by Fri 15 Jan.
    assert plan_of(second.id) == expected(
        early_7=date(2027, 1, 8), early_3=date(2027, 1, 12),
        order_by=date(2027, 1, 15), overdue=date(2027, 1, 17),
    )


def test_a_shipped_patient_must_order_earlier_before_running_out(app_ctx: Flask, clock: Any, staff: dict) -> None:
    _, pickup = dispense(staff, clock)
    w = world(staff, patient={"first_name": "Ship", "email": "ship@example.com",
                              "delivery_preference": DeliveryMethod.SHIP, "shipping_days": 3})
    shipped = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, shipped.id, "ready")
    factories.dispense(w["technician"], shipped.id, carrier="UPS", tracking_number="1Z999AA10123456784")
    db.session.commit()

    # The supply starts on arrival (Thu 26 Nov) and lasts through Fri 25 Dec (first day without: Sat 26);
    # 3 shipping + 2 buffer days before that is Mon 21 Dec: ready by then, so order by Thu 17 Dec.
    assert shipped.run_out_date == date(2026, 12, 25)
    plan = plan_of(shipped.id)
    order_by = plan["order_by"].astimezone(CHICAGO).date()
    assert order_by == date(2026, 12, 17)
    pickup_order_by = plan_of(pickup.id)["order_by"].astimezone(CHICAGO).date()
    assert (shipped.run_out_date - order_by).days == 8  # vs 5 days for the patient who picks up
    assert (pickup.run_out_date - pickup_order_by).days == 5


def test_an_opted_out_patient_gets_no_refill_reminders(app_ctx: Flask, clock: Any, staff: dict) -> None:
    _, order = dispense(staff, clock, patient={"reminders_opt_in": False})
    assert rows_of(order.id) == []
    # …but still hears when the prescription needs renewing (the therapy depends on it).
    _, last = dispense(staff, clock, refills_authorized=0,
                       patient={"first_name": "Ann", "email": "ann@example.com", "reminders_opt_in": False})
    assert plan_of(last.id) == {"renewal": ten_am(date(2026, 12, 1))}


def test_no_refills_left_plans_a_renewal_notice_weeks_ahead_and_a_task(app_ctx: Flask, clock: Any,
                                                                        staff: dict) -> None:
    w, order = dispense(staff, clock, refills_authorized=0)

    plan = plan_of(order.id)
    # Last day covered Tue 22 Dec − 21 days (RENEWAL_NOTICE_DAYS) = Tue 1 Dec, with the usual refill reminders.
    assert plan["renewal"] == ten_am(date(2026, 12, 1))
    assert set(plan) == {"renewal", "early_7", "early_3", "order_by", "overdue"}
    task = db.session.execute(sa.select(RenewalRequest).where(
        RenewalRequest.prescription_id == w["rx"].id)).scalar_one()
    assert task.state == RenewalState.NEEDED


def test_a_prescription_expiring_before_run_out_also_needs_renewal(app_ctx: Flask, clock: Any,
                                                                    staff: dict) -> None:
    _, order = dispense(staff, clock, refills_authorized=5, expiry_date=date(2026, 12, 13))
    assert plan_of(order.id)["renewal"] == ten_am(date(2026, 12, 1))


# ---- cancellation -------------------------------------------------------------------------------------------------


def test_requesting_a_refill_cancels_the_reminders(app_ctx: Flask, clock: Any, staff: dict) -> None:
    w, order = dispense(staff, clock)
    refill_flow.request(w["technician"], w["rx"].id, source=RequestSource.STAFF)
    db.session.commit()
    assert plan_of(order.id) == {}
    assert {r.cancelled_reason for r in rows_of(order.id)} == {"refill requested"}


def test_ordering_a_refill_cancels_the_reminders(app_ctx: Flask, clock: Any, staff: dict) -> None:
    w, order = dispense(staff, clock)
    clock.set(morning(date(2026, 12, 16)))
    order_flow.start_fill(w["pharmacist"], w["rx"].id)
    db.session.commit()
    assert plan_of(order.id) == {}
    assert {r.cancelled_reason for r in rows_of(order.id)} == {"refill ordered"}


def test_discontinuing_the_prescription_cancels_the_reminders(app_ctx: Flask, clock: Any, staff: dict) -> None:
    w, order = dispense(staff, clock)
    changes.discontinue(w["pharmacist"], w["rx"].id, "Stopped by the neurologist")
    db.session.commit()
    assert plan_of(order.id) == {}
    assert {r.cancelled_reason for r in rows_of(order.id)} == {"prescription discontinued"}


def test_opting_out_cancels_and_opting_back_in_replans(app_ctx: Flask, clock: Any, staff: dict) -> None:
    w, order = dispense(staff, clock)
    before = plan_of(order.id)
    clock.set(morning(date(2026, 12, 12)))  # early_7 (10 Dec) has gone by meanwhile… unsent

    assert services.set_reminder_preference(w["patient"].id, False, via="test") is True
    db.session.commit()
    assert plan_of(order.id) == {}
    assert {r.cancelled_reason for r in rows_of(order.id)} == {"patient opted out"}
    assert db.session.get(Patient, w["patient"].id).reminders_opt_in is False

    assert services.set_reminder_preference(w["patient"].id, True, via="test") is True
    db.session.commit()
    # The future reminders are back on their days; the one whose day passed stays cancelled.
    assert plan_of(order.id) == {k: v for k, v in before.items() if k != "early_7"}
    assert len(rows_of(order.id)) == 4  # the same rows, not new ones
    actions = db.session.execute(sa.select(AuditEvent.action).where(
        AuditEvent.patient_id == w["patient"].id, AuditEvent.action.like("reminders.%"))
        .order_by(AuditEvent.id)).scalars().all()
    assert actions == ["reminders.opt_out", "reminders.opt_in"]
    assert services.set_reminder_preference(w["patient"].id, True, via="test") is False  # already on


# ---- re-planning ----------------------------------------------------------------------------------------------------


def test_replanning_after_a_fills_dates_change_moves_the_same_rows(app_ctx: Flask, clock: Any,
                                                                   staff: dict) -> None:
    _, order = dispense(staff, clock)
    ids_before = {r.dedupe_key: r.id for r in rows_of(order.id)}
    # The delivery date is corrected: the supply started a day later (Tue 24 Nov) and lasts through Wed 23 Dec;
    # ready by Tue 22 Dec; order by Fri 18 Dec.
    order.supply_starts_on = date(2026, 11, 24)
    supply_services.refresh(order.prescription)
    planning.plan_for_order(order.id)
    db.session.commit()

    assert plan_of(order.id) == expected(
        early_7=date(2026, 12, 11), early_3=date(2026, 12, 15), order_by=date(2026, 12, 18),
        overdue=date(2026, 12, 20),
    )
    assert {r.dedupe_key: r.id for r in rows_of(order.id)} == ids_before  # moved, not duplicated
    assert {r.next_attempt_at for r in rows_of(order.id)} == set(plan_of(order.id).values())


def test_flask_reminders_replan_applies_a_new_lead_time(app: Flask, app_ctx: Flask, clock: Any,
                                                       staff: dict) -> None:
    w, order = dispense(staff, clock)
    db.session.get(Formula, w["formula"].id).lead_time_business_days = 5
    db.session.commit()

    result = app.test_cli_runner().invoke(args=["reminders", "replan"])

    assert result.exit_code == 0, result.output
    assert "1 fill(s) re-planned" in result.output
    # Ready by Mon 21 Dec − 5 business days = Mon 14 Dec.
    assert plan_of(order.id) == expected(
        early_7=date(2026, 12, 7), early_3=date(2026, 12, 11), order_by=date(2026, 12, 14),
        overdue=date(2026, 12, 16),
    )


# ---- flask reminders due --as-of ---------------------------------------------------------------------------------------


def test_flask_reminders_due_says_what_goes_out_and_why_without_names(app: Flask, app_ctx: Flask, clock: Any,
                                                                     staff: dict) -> None:
    w, order = dispense(staff, clock)
    _, other = dispense(staff, clock, refills_authorized=0,
                        patient={"first_name": "Ann", "last_name": "Other", "email": "ann@example.com"})
    runner = app.test_cli_runner()

    result = runner.invoke(args=["reminders", "due", "--as-of", "2026-12-10"])

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "2 email(s) due on 2026-12-10"
    first = lines[1]
    assert first.startswith("2026-12-10 10:00 CST")
    assert "reminder_early" in first and f"patient {w['patient'].id} " in first
    assert w["rx"].rx_number in first and "order-by 2026-12-17" in first
    assert "7 days before the order-by date" in first
    for secret in ("Margaret", "Ellison", "Ann", "Other", "@example.com", "Naltrexone"):
        assert secret not in result.output

    renewal_day = runner.invoke(args=["reminders", "due", "--as-of", "2026-12-01"]).output
    assert "renewal_needed" in renewal_day and "no refills left" in renewal_day
    assert runner.invoke(args=["reminders", "due", "--as-of", "2026-12-11"]).output.startswith(
        "0 email(s) due on 2026-12-11")

    # Two days later nothing was sent (no scheduler ran): today's list carries the late ones.
    clock.set(morning(date(2026, 12, 12)))
    late = runner.invoke(args=["reminders", "due"]).output
    assert late.startswith("3 email(s) due on 2026-12-12")  # two 7-day reminders and a renewal notice
    assert "late (was due 2026-12-10)" in late and "late (was due 2026-12-01)" in late
    assert other.id != order.id


def test_cancelling_the_ordered_refill_brings_the_reminders_back(app_ctx, clock, staff) -> None:
    """Ordering a refill cancels the pending reminders; cancelling that order must restore them."""
    import sqlalchemy as sa

    from pharmacy.extensions import db
    from pharmacy.reminders.models import OutboxMessage
    from pharmacy.reminders.rules import OutboxState
    from tests import factories

    w = factories.world(staff)
    first = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    factories.run_order_to(w, first.id, "dispensed")
    clock.advance(__import__("datetime").timedelta(days=20))

    def pending() -> set[str]:
        return set(db.session.execute(sa.select(OutboxMessage.dedupe_key).where(
            OutboxMessage.order_id == first.id, OutboxMessage.state == OutboxState.PENDING)).scalars())

    planned = pending()
    assert planned, "a dispensed fill has reminders"
    refill = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    assert pending() == set()
    order_flow.cancel(w["pharmacist"], refill.id, "Patient will pick up next month")
    assert pending(), "the reminders of the still-current fill are back"
    assert {k.rsplit(":", 1)[1] for k in pending()} <= {k.rsplit(":", 1)[1] for k in planned} | {"overdue"}
