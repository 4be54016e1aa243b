"""Building blocks for tests: real rows made through the real services (call inside an app context)."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from pharmacy.billing.models import Fee, PriceEntry
from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot
from pharmacy.compounding.rules import UspCategory
from pharmacy.core.actor import Actor, staff
from pharmacy.core.context import now, today
from pharmacy.core.roles import Role
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import Form
from pharmacy.workflows import orders as order_flow


def actor(user: Any) -> Actor:
    """An Actor for a tests.conftest.Staff (or anything with .id and .role)."""
    return staff(user.id, user.role)


def formula(code: str = "LDN-CAP-4.5", *, form: Form = Form.CAPSULE, strength: str = "4.5",
            category: UspCategory = UspCategory.OTHER_NONAQUEOUS, lead_time: int = 2,
            prices: tuple[tuple[str, int, int], ...] = (("30", 30, 5500), ("90", 90, 15500)),
            lots: bool = True) -> Formula:
    """A formula with two ingredients, prices and unexpired lots for each ingredient."""
    existing = db.session.execute(sa.select(Formula).where(Formula.code == code)).scalar_one_or_none()
    if existing:
        return existing
    unit_word = "100 capsules" if form == Form.CAPSULE else "100 mL"
    f = Formula(
        code=code, name=f"Naltrexone {strength} {'mg capsules' if form == Form.CAPSULE else 'mg/mL ' + form.value}",
        form=form, strength_mg=Decimal(strength), usp_category=category, storage="Room temperature",
        container="Amber vial", method="Mix and fill.", lead_time_business_days=lead_time, created_at=now(),
    )
    f.ingredients = [
        FormulaIngredient(position=0, name="Naltrexone hydrochloride USP", salt_form="hydrochloride",
                          amount=Decimal(strength) * 100, unit="mg", per=unit_word, active_ingredient=True),
        FormulaIngredient(position=1, name="Microcrystalline cellulose NF" if form == Form.CAPSULE else "Base",
                          amount=Decimal("14"), unit="g", per=unit_word),
    ]
    db.session.add(f)
    db.session.flush()
    for qty, days, cents in prices:
        db.session.add(PriceEntry(formula_id=f.id, quantity=Decimal(qty), days_supply=days, price_cents=cents,
                                  effective_at=now() - timedelta(days=30)))
    if not db.session.execute(sa.select(Fee.id).where(Fee.code == "shipping")).first():
        db.session.add(Fee(code="shipping", amount_cents=895, effective_at=now() - timedelta(days=30)))
    if lots:
        for ing in f.ingredients:
            lot(ing.name, f"{ing.name[:3].upper()}-{f.id}", expiry=today() + timedelta(days=400))
    db.session.flush()
    return f


def lot(ingredient: str, number: str, *, expiry: date, supplier: str = "Medisca") -> IngredientLot:
    row = IngredientLot(ingredient_name=ingredient, supplier=supplier, lot_number=number, expiry_date=expiry,
                        received_on=today() - timedelta(days=10), created_at=now())
    db.session.add(row)
    db.session.flush()
    return row


def prescriber(npi: str = "1234567893", **kw: Any) -> Any:
    from pharmacy.prescriptions.models import Prescriber

    existing = db.session.execute(sa.select(Prescriber).where(Prescriber.npi == npi)).scalar_one_or_none()
    if existing:
        return existing
    p = Prescriber(first_name=kw.get("first_name", "Elena"), last_name=kw.get("last_name", "Marquez"),
                   credentials="MD", npi=npi, email=kw.get("email", "emarquez@neuro.example"), created_at=now())
    db.session.add(p)
    db.session.flush()
    return p


def patient(who: Actor, **overrides: Any) -> Any:
    from pharmacy.patients import services

    data = {
        "first_name": "Margaret", "last_name": "Ellison", "date_of_birth": date(1968, 4, 12),
        "email": "margaret@example.com", "phone": "(217) 555-0101", "address_line1": "14 Oak Lane",
        "city": "Springfield", "state": "IL", "postal_code": "62704", "conditions": ["multiple sclerosis"],
        "medications": [], "reminders_opt_in": True, "shipping_days": 2,
    }
    data.update(overrides)
    return services.create_patient(who, data)


def prescription(who: Actor, patient_id: int, formula_id: int, prescriber_id: int, **overrides: Any) -> Any:
    from pharmacy.prescriptions import services
    from pharmacy.prescriptions.rules import DosingTime

    data = {
        "patient_id": patient_id, "prescriber_id": prescriber_id, "formula_id": formula_id,
        "dose_mg": Decimal("4.5"), "titration": [], "dosing_time": DosingTime.BEDTIME, "quantity": None,
        "days_supply": 30, "refills_authorized": 5, "written_date": today() - timedelta(days=10),
    }
    data.update(overrides)
    return services.create_prescription(who, data)


def second_prescription(who: Actor, patient_id: int, formula_id: int, prescriber_id: int, **overrides: Any) -> Any:
    """Another current prescription for a patient who has one, both meant (capsules and a liquid, say): made, and the
    duplicate-therapy stop it raises overridden by `who` (a pharmacist), as the pharmacy would."""
    from pharmacy.prescriptions import screening
    from pharmacy.prescriptions import services as prescriptions

    rx = prescription(who, patient_id, formula_id, prescriber_id, **overrides)
    for alert in screening.alerts_for(rx.id):
        if alert.code == "duplicate_ldn":
            prescriptions.resolve_alert(who, alert.id, "The prescriber wants both (confirmed by phone)")
    return rx


def replacement_data(w: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """What a renewal of the world's prescription says (written today), for workflows/prescription_changes.replace."""
    from pharmacy.prescriptions.rules import DosingTime

    data = {"prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id, "dose_mg": Decimal("4.5"),
            "titration": [], "dosing_time": DosingTime.BEDTIME, "quantity": None, "days_supply": 30,
            "refills_authorized": 5, "written_date": today()}
    data.update(overrides)
    return data


def world(staff_map: dict[str, Any], **rx_overrides: Any) -> dict[str, Any]:
    """A formula, a prescriber, a patient and an active prescription, made by the pharmacist."""
    ph = actor(staff_map["pharmacist"])
    f = formula()
    doc = prescriber()
    p = patient(ph, **rx_overrides.pop("patient", {}))
    rx = prescription(ph, p.id, f.id, doc.id, **rx_overrides)
    db.session.flush()
    return {"formula": f, "prescriber": doc, "patient": p, "rx": rx, "pharmacist": ph,
            "pharmacist2": actor(staff_map["pharmacist2"]), "technician": actor(staff_map["technician"]),
            "admin": actor(staff_map["admin"])}


def world_with_order(staff_map: dict[str, Any], state: str) -> tuple[dict[str, Any], int]:
    """A world whose prescription's first fill is ordered and walked to `state` (inside a request context; the
    caller commits): the world and the order's id."""
    w = world(staff_map)
    order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, order.id, state)
    return w, order.id


def run_order_to(w: dict[str, Any], order_id: int, target: str, *, lots: list[dict[str, Any]] | None = None) -> None:
    """Walk an order through the workflow, from wherever it is now to `target`, with the right people at each
    step. `lots`: what compounding uses (default: every usable lot of the formula's ingredients, 1 g each)."""
    from pharmacy.compounding import services as orders
    from pharmacy.compounding.models import Order

    steps = ["requested", "verified", "compounding", "checked", "ready", "dispensed"]
    at = db.session.get(Order, order_id)
    current = at.state.value
    if current == "compounding" and at.qc_passed is False and target != "compounding":
        current = "verified"  # sent back or failed at its check: the batch is made again before it is checked again
    for step in steps[steps.index(current) + 1: steps.index(target) + 1]:
        order = db.session.get(Order, order_id)
        if step == "verified":
            orders.verify_order(w["pharmacist"], order_id)
        elif step == "compounding":
            if lots is None:
                usable = db.session.execute(sa.select(IngredientLot).where(IngredientLot.ingredient_name.in_(
                    [i.name for i in w["formula"].ingredients]), IngredientLot.expiry_date >= today())).scalars().all()
                lots = [{"ingredient_lot_id": x.id, "quantity_used": "1", "unit": "g"} for x in usable]
            if order.state.value == "verified":  # choose the lots first: the BUD fixes the quantity to make
                orders.plan_batch(w["technician"], order_id, lots=[{"ingredient_lot_id": x["ingredient_lot_id"]}
                                                                   for x in lots])
            orders.compound_order(w["technician"], order_id, quantity_made=order.quantity, lots=lots)
        elif step == "checked":
            orders.check_order(w["pharmacist2"], order_id)
        elif step == "ready":
            order_flow.release(w["pharmacist2"], order_id)
        else:
            dispense(w["technician"], order_id)


def role(name: str) -> Role:
    return Role(name)


def dispense(who: Actor, order_id: int, **details: Any) -> Any:
    """Dispense through the workflow (supply, reminders, notices) and return the order."""
    return order_flow.dispense(who, order_id, **details).order


def transition(who: Actor, order_id: int, to: str, payload: dict[str, Any] | None = None) -> Any:
    """One step through the workflow's single entry, returning the order."""
    return order_flow.transition(who, order_id, to, payload).order


def renewed_with_autorefill(staff: dict, clock: Any) -> tuple[dict[str, Any], int]:
    """A patient enrolled in auto-refill after their first fill, whose prescription is then renewed (replaced) three
    days later — committed; (the world, the new prescription's id). Call inside a request context."""
    from pharmacy.autorefill import services as autorefill
    from pharmacy.workflows import prescription_changes

    w = world(staff)
    first = order_flow.start_fill(w["pharmacist"], w["rx"].id)
    run_order_to(w, first.id, "dispensed")
    autorefill.enrol(Actor(kind="patient", patient_id=w["patient"].id), w["rx"].id)
    db.session.commit()
    clock.advance(timedelta(days=3))
    new = prescription_changes.replace(w["pharmacist"], w["rx"].id, replacement_data(w))
    db.session.commit()
    return w, new.id


def fill_now(w: dict[str, Any], rx_id: int, *, ship: bool = False, too_soon_reason: str | None = None,
             tracking: str = "9400100000000000000001") -> Any:
    """A fill of `rx_id` started, made and dispensed today — handed over at the counter, or shipped (it reaches the
    patient the patient's shipping days later); the order as dispensed."""
    from pharmacy.compounding.models import Order

    order = order_flow.start_fill(w["technician"], rx_id)
    run_order_to(w, order.id, "ready")
    details: dict[str, Any] = ({"method": "ship", "carrier": "USPS", "tracking_number": tracking} if ship
                               else {"method": "pickup"})
    if too_soon_reason:
        details["too_soon_reason"] = too_soon_reason
    order_flow.dispense(w["pharmacist"], order.id, **details)
    return db.session.get(Order, order.id)


def refill_shipped(staff_map: dict[str, Any], clock: Any, *, days_after_run_out: int) -> dict[str, Any]:
    """A shipping patient (4 days on the road): the first 30-day fill shipped; the clock moved to
    `days_after_run_out` days after its last covered day (negative: before it) and the refill shipped that day.
    The world, the prescription and patient ids, the first fill's run-out and the refill's arrival (the caller
    commits)."""
    from pharmacy.prescriptions.models import Prescription

    w = world(staff_map, patient={"shipping_days": 4, "delivery_preference": "ship"})
    rx_id = w["rx"].id
    fill_now(w, rx_id, ship=True, tracking="9400111000000")
    run_out = db.session.get(Prescription, rx_id).latest_run_out_date
    clock.advance(run_out - today() + timedelta(days=days_after_run_out))
    refill = fill_now(w, rx_id, ship=True, tracking="9400111000001")
    return {"w": w, "rx_id": rx_id, "patient_id": w["patient"].id, "run_out": run_out,
            "arrives": refill.supply_starts_on}


def checked_batch_of_three(staff_map: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """Three patients' 30-capsule orders made as one batch (400 mg of naltrexone weighed, 89 capsules counted) and
    checked; the world and the orders' ids."""
    from pharmacy.compounding import services as compounding
    from pharmacy.workflows import batches as batch_flow

    w = world(staff_map)
    ids = []
    for n in range(3):
        rx = w["rx"]
        if n:
            p = patient(w["pharmacist"], first_name=f"Pat{n}", last_name=f"Batch{n}", email=f"p{n}@example.com")
            rx = prescription(w["pharmacist"], p.id, w["formula"].id, w["prescriber"].id)
        order = order_flow.start_fill(w["pharmacist"], rx.id)
        compounding.verify_order(w["pharmacist"], order.id)
        ids.append(order.id)
    lots = list(db.session.execute(sa.select(IngredientLot).order_by(IngredientLot.id)).scalars())
    batch = batch_flow.plan(w["technician"], ids, lots=[{"ingredient_lot_id": x.id} for x in lots])
    batch_flow.record(w["technician"], batch.id, quantity_made="89", lots=[
        {"ingredient_lot_id": x.id, "quantity_used": "400" if x.ingredient_name.startswith("Naltrexone") else "12.5"}
        for x in lots])
    batch_flow.check(w["pharmacist2"], batch.id)
    return w, ids
