"""Load the demo data in seeds/ idempotently, dated relative to the day it is loaded.

Every row of every file is validated first; a bad row stops the load with the file, the row
and the reason, and nothing is written (the whole load is one transaction). Patients and
prescriptions go through the real services (so they are screened and audited); past fills are
written as history, since no service may back-date a dispensing.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from marshmallow import Schema, ValidationError

from pharmacy.billing.models import Fee, Payment, PriceEntry
from pharmacy.billing.pricing import quote
from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.compounding import rules as comp_rules
from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot, Order, OrderIngredientLot
from pharmacy.compounding.rules import OrderState
from pharmacy.core.actor import Actor, staff
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import DomainError
from pharmacy.core.models import User
from pharmacy.core.roles import Role
from pharmacy.core.services import create_user
from pharmacy.extensions import db
from pharmacy.inventory.models import InventoryItem, LotStock, StockMove
from pharmacy.inventory.rules import MoveKind
from pharmacy.patients import services as patients
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import quantity_for_days
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders import planning
from pharmacy.seeding import schemas
from pharmacy.supply import services as supply
from pharmacy.supply.rules import arrival_date, run_out_after
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests

FILES = ("formulas", "ingredient_lots", "prices", "prescribers", "patients")


class SeedError(Exception):
    """A bad seed row: names the file, the row and the reason."""


@dataclass
class SeedReport:
    created: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    credentials: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, kind: str, created: bool) -> None:
        target = self.created if created else self.skipped
        target[kind] = target.get(kind, 0) + 1


def _read(path: Path, key: str, schema: Schema) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SeedError(f"{path.name}: not valid YAML ({exc})") from None
    rows = doc.get(key, [])
    if not isinstance(rows, list):
        raise SeedError(f"{path.name}: '{key}' must be a list")
    out = []
    for i, row in enumerate(rows, start=1):
        try:
            out.append(schema.load(row))
        except ValidationError as err:
            raise SeedError(f"{path.name}: {key} row {i}: {_first_message(err.messages)}") from None
    return out


def _first_message(messages: Any, prefix: str = "") -> str:
    if isinstance(messages, dict):
        parts = [_first_message(v, f"{prefix}{k}.") for k, v in messages.items()]
        return "; ".join(parts)
    if isinstance(messages, list):
        return f"{prefix.rstrip('.')}: {' '.join(str(m) for m in messages)}"
    return f"{prefix.rstrip('.')}: {messages}"


def _at(day: date, hour: int = 12) -> datetime:
    """An instant on a local day (demo history is stamped mid-day, pharmacy time)."""
    return datetime.combine(day, time(hour), tzinfo=settings().timezone).astimezone(UTC)


def load(directory: Path, *, on_progress: Callable[[str], None] = lambda _m: None) -> SeedReport:
    """Validate every file, then load them all in order; raise SeedError (nothing written) on a bad row."""
    data = {
        "formulas": _read(directory / "formulas.yaml", "formulas", schemas.FormulaRow()),
        "ingredient_lots": _read(directory / "ingredient_lots.yaml", "ingredient_lots", schemas.LotRow()),
        "reorder_points": _read(directory / "ingredient_lots.yaml", "reorder_points", schemas.ReorderRow()),
        "prices": _read(directory / "prices.yaml", "prices", schemas.PriceRow()),
        "fees": _read(directory / "prices.yaml", "fees", schemas.FeeRow()),
        "prescribers": _read(directory / "prescribers.yaml", "prescribers", schemas.PrescriberRow()),
        "patients": _read(directory / "patients.yaml", "patients", schemas.PatientRow()),
    }
    report = SeedReport()
    users = _users(report)
    on_progress("staff accounts")
    formulas = _formulas(data["formulas"], report)
    on_progress("formulas")
    _lots(data["ingredient_lots"], report)
    _reorder_points(data["reorder_points"], report)
    _prices(data["prices"], data["fees"], formulas, report)
    prescribers = _prescribers(data["prescribers"], report)
    on_progress("reference data")
    for i, row in enumerate(data["patients"], start=1):
        try:
            _patient(row, formulas, prescribers, users, report)
        except DomainError as exc:
            details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
            raise SeedError(f"patients.yaml: patients row {i}: {exc.message} {details}".strip()) from None
    on_progress("patients")
    db.session.flush()
    return report


def _users(report: SeedReport) -> dict[str, User]:
    """Demo staff, one per role, each with a random password reported once (never a default)."""

    wanted = {
        "admin": ("admin@pharmacy.example", "Avery Admin", Role.ADMIN),
        "pharmacist": ("pharmacist@pharmacy.example", "Dr. Rita Patel, PharmD", Role.PHARMACIST),
        "pharmacist2": ("checker@pharmacy.example", "Dr. Sam Okoro, PharmD", Role.PHARMACIST),
        "technician": ("technician@pharmacy.example", "Jordan Lee, CPhT", Role.TECHNICIAN),
    }
    console = Actor(kind="staff", role=Role.ADMIN)
    out = {}
    for key, (email, name, role) in wanted.items():
        user = db.session.execute(sa.select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = create_user(console, email=email, full_name=name, role=role, password=password)
            report.credentials.append((role.value, email, password))
            report.add("staff", True)
        else:
            report.add("staff", False)
        out[key] = user
    return out


def _formulas(rows: list[dict[str, Any]], report: SeedReport) -> dict[str, Formula]:
    out = {}
    for row in rows:
        formula = db.session.execute(sa.select(Formula).where(Formula.code == row["code"])).scalar_one_or_none()
        if formula is None:
            ingredients = row.pop("ingredients")
            formula = Formula(**row, created_at=now(), active=True)
            formula.ingredients = [
                FormulaIngredient(position=i, name=x["name"], salt_form=x["salt_form"], amount=x["amount"],
                                  unit=x["unit"], per=x["per"], active_ingredient=x["active"])
                for i, x in enumerate(ingredients)
            ]
            db.session.add(formula)
            report.add("formulas", True)
        else:
            report.add("formulas", False)
        out[formula.code] = formula
    db.session.flush()
    return out


def _lots(rows: list[dict[str, Any]], report: SeedReport) -> None:
    day = today()
    for row in rows:
        exists = db.session.execute(sa.select(IngredientLot.id).where(
            IngredientLot.supplier == row["supplier"], IngredientLot.lot_number == row["lot_number"])).first()
        if exists:
            report.add("ingredient lots", False)
            continue
        lot = IngredientLot(
            ingredient_name=row["ingredient_name"], supplier=row["supplier"], lot_number=row["lot_number"],
            expiry_date=day + timedelta(days=row["expiry_in_days"]),
            received_on=day - timedelta(days=row["received_days_ago"]), created_at=now(),
        )
        db.session.add(lot)
        report.add("ingredient lots", True)
        if row.get("quantity") and row.get("unit"):
            # What is on the shelf today, as the lot's receipt in the ledger (on hand = the sum of its moves).
            db.session.flush()
            qty = Decimal(row["quantity"])
            db.session.add(StockMove(ingredient_lot_id=lot.id, kind=MoveKind.RECEIPT, quantity=qty, unit=row["unit"],
                                     at=now(), reason="on the shelf when the demo was loaded"))
            db.session.add(LotStock(ingredient_lot_id=lot.id, unit=row["unit"], received=qty, used=Decimal(0),
                                    wasted=Decimal(0), adjusted=Decimal(0), on_hand=qty, updated_at=now()))
    db.session.flush()


def _reorder_points(rows: list[dict[str, Any]], report: SeedReport) -> None:
    for row in rows:
        if db.session.execute(sa.select(InventoryItem.id).where(
                InventoryItem.ingredient_name == row["ingredient_name"])).first():
            report.add("reorder points", False)
            continue
        db.session.add(InventoryItem(ingredient_name=row["ingredient_name"], unit=row["unit"],
                                     reorder_point=Decimal(row["reorder_point"]),
                                     reorder_quantity=row.get("reorder_quantity"), updated_at=now()))
        report.add("reorder points", True)
    db.session.flush()


def _prices(rows: list[dict[str, Any]], fees: list[dict[str, Any]], formulas: dict[str, Formula],
            report: SeedReport) -> None:
    for i, row in enumerate(rows, start=1):
        formula = formulas.get(row["formula"])
        if formula is None:
            raise SeedError(f"prices.yaml: prices row {i}: formula: unknown formula code {row['formula']!r}")
        exists = db.session.execute(sa.select(PriceEntry.id).where(
            PriceEntry.formula_id == formula.id, PriceEntry.quantity == row["quantity"],
            PriceEntry.retired_at.is_(None))).first()
        if exists:
            report.add("prices", False)
            continue
        db.session.add(PriceEntry(formula_id=formula.id, quantity=row["quantity"], days_supply=row["days_supply"],
                                  price_cents=row["price_cents"], effective_at=now() - timedelta(days=400)))
        report.add("prices", True)
    for row in fees:
        if db.session.execute(sa.select(Fee.id).where(Fee.code == row["code"], Fee.retired_at.is_(None))).first():
            report.add("fees", False)
            continue
        db.session.add(Fee(code=row["code"], amount_cents=row["amount_cents"], effective_at=now() - timedelta(days=400)))
        report.add("fees", True)
    db.session.flush()


def _prescribers(rows: list[dict[str, Any]], report: SeedReport) -> dict[str, Prescriber]:
    out = {}
    for row in rows:
        p = db.session.execute(sa.select(Prescriber).where(Prescriber.npi == row["npi"])).scalar_one_or_none()
        if p is None:
            p = Prescriber(**row, created_at=now())
            db.session.add(p)
            report.add("prescribers", True)
        else:
            report.add("prescribers", False)
        out[p.npi] = p
    db.session.flush()
    return out


def _patient(row: dict[str, Any], formulas: dict[str, Formula], prescribers: dict[str, Prescriber],
             users: dict[str, User], report: SeedReport) -> None:

    pharmacist = staff(users["pharmacist"].id, Role.PHARMACIST)
    exists = db.session.execute(sa.select(Patient.id).where(
        Patient.first_name == row["first_name"], Patient.last_name == row["last_name"],
        Patient.date_of_birth == row["date_of_birth"])).first()
    if exists:
        report.add("patients", False)
        return
    address = row.get("address") or {}
    patient = patients.create_patient(pharmacist, {
        "first_name": row["first_name"], "last_name": row["last_name"], "date_of_birth": row["date_of_birth"],
        "email": row["email"], "phone": row["phone"], "address_line1": address.get("line1"),
        "address_line2": address.get("line2"), "city": address.get("city"), "state": address.get("state"),
        "postal_code": address.get("postal_code"), "conditions": row["conditions"], "medications": row["medications"],
        "reminders_opt_in": row["reminders_opt_in"], "delivery_preference": row["delivery"],
        "shipping_days": row["shipping_days"],
    })
    report.add("patients", True)
    day = today()
    for rx_row in row["prescriptions"]:
        formula = formulas.get(rx_row["formula"])
        prescriber = prescribers.get(rx_row["prescriber"])
        if formula is None or prescriber is None:
            raise SeedError(f"unknown formula {rx_row['formula']!r} or prescriber NPI {rx_row['prescriber']!r}")
        rx = prescriptions.create_prescription(pharmacist, {
            "patient_id": patient.id, "prescriber_id": prescriber.id, "formula_id": formula.id,
            "dose_mg": rx_row["dose_mg"], "titration": rx_row["titration"], "dosing_time": rx_row["dosing_time"],
            "quantity": rx_row["quantity"], "days_supply": rx_row["days_supply"],
            "refills_authorized": rx_row["refills_authorized"],
            "written_date": day - timedelta(days=rx_row["written_days_ago"]),
        }, allow_expired=True)  # history may hold prescriptions that have expired since
        report.add("prescriptions", True)
        for number, fill in enumerate(f for f in rx_row["fills"] if f["state"] == OrderState.DISPENSED):
            _history_fill(rx, formula, number, day - timedelta(days=fill["days_ago"] or 0), users)
            report.add("past fills", True)
        if rx_row["status"] != "active":
            rx.status = rx_row["status"]
            rx.status_reason = rx_row["status_reason"]
        _current_work(rx, rx_row, users, report)
    for effect in row["side_effects"]:
        patients.add_side_effect(pharmacist, patient.id, {
            "effect": effect["effect"], "noted_on": day - timedelta(days=effect["days_ago"]),
            "note": effect["note"], "persistent": True,
        })


def _history_fill(rx: Prescription, formula: Formula, fill_number: int, dispensed_on: date,
                  users: dict[str, User]) -> Order:
    """A past, dispensed and paid fill, with its compounding record, as an import would bring it."""
    compounded_on = dispensed_on - timedelta(days=2)
    lots = _lots_for(formula, compounded_on)
    bud = comp_rules.beyond_use_date(formula.usp_category, compounded_on, [lot.expiry_date for lot in lots])
    quantity = rx.quantity if fill_number == 0 else _maintenance_quantity(rx, formula)
    days = rx.days_supply
    ships = rx.patient.delivery_preference == "ship"
    starts_on = arrival_date(dispensed_on, rx.patient.shipping_days if ships else 0)
    q = quote(formula.id, quantity, rx.patient.delivery_preference)
    low, high = comp_rules.lot_prefix_range(compounded_on)
    seq = db.session.execute(sa.select(sa.func.count()).select_from(Order).where(
        Order.lot_number >= low, Order.lot_number < high)).scalar_one() + 1
    pharmacist, checker, tech = users["pharmacist"].id, users["pharmacist2"].id, users["technician"].id
    order = Order(
        prescription_id=rx.id, patient_id=rx.patient_id, fill_number=fill_number, authorized_fill=fill_number,
        state=OrderState.DISPENSED,
        state_changed_at=_at(dispensed_on), quantity=quantity, days_supply=days,
        delivery_method=rx.patient.delivery_preference, lot_number=comp_rules.lot_number(compounded_on, seq), bud=bud,
        quantity_made=quantity, qc_yield_pct=Decimal(100), qc_passed=True,
        verified_by_id=pharmacist, verified_at=_at(compounded_on, 9), compounded_by_id=tech,
        compounded_at=_at(compounded_on, 11), checked_by_id=checker, checked_at=_at(compounded_on, 15),
        released_by_id=checker, released_at=_at(compounded_on, 15), dispensed_by_id=tech,
        dispensed_at=_at(dispensed_on), dispensed_on=dispensed_on, supply_starts_on=starts_on,
        run_out_date=run_out_after(rx.latest_run_out_date, starts_on, days), price_cents=q.price_cents,
        shipping_cents=q.shipping_cents, price_entry_id=q.price_entry_id,
        created_at=_at(compounded_on - timedelta(days=1), 10), updated_at=_at(dispensed_on),
        carrier="USPS" if rx.patient.delivery_preference == "ship" else None,
        tracking_number=f"9400{rx.id:06d}{fill_number:04d}" if rx.patient.delivery_preference == "ship" else None,
    )
    order.lots_used = [OrderIngredientLot(ingredient_lot_id=lot.id, quantity_used=_used(formula, lot, quantity),
                                          unit=_unit(formula, lot)) for lot in lots]
    db.session.add(order)
    db.session.flush()
    supply.refresh(rx)
    unpaid = rx.patient.last_name == "Whitaker" and dispensed_on > today() - timedelta(days=40)
    if not unpaid:
        db.session.add(Payment(patient_id=rx.patient_id, order_id=order.id, kind=PaymentKind.PAYMENT,
                               method=[PaymentMethod.CARD, PaymentMethod.HSA_FSA, PaymentMethod.CASH][rx.id % 3],
                               amount_cents=order.total_cents, received_at=_at(dispensed_on, 13)))
    return order


def _maintenance_quantity(rx: Prescription, formula: Formula) -> Decimal:

    return quantity_for_days(formula.form, formula.strength_mg, rx.dose_mg, rx.days_supply)


def _lots_for(formula: Formula, on: date) -> list[IngredientLot]:
    """For each ingredient, the unexpired lot with the latest expiry (demo history uses the good stock)."""
    out = []
    for ing in formula.ingredients:
        lot = db.session.execute(
            sa.select(IngredientLot).where(IngredientLot.ingredient_name == ing.name, IngredientLot.expiry_date > on)
            .order_by(IngredientLot.expiry_date.desc()).limit(1)
        ).scalar_one_or_none()
        if lot is None:
            raise SeedError(f"formulas.yaml: no usable ingredient lot for {ing.name!r} in ingredient_lots.yaml")
        out.append(lot)
    return out


def _per_count(per: str) -> Decimal:
    m = re.match(r"\s*([\d.]+)", per)
    return Decimal(m.group(1)) if m else Decimal(100)


def _used(formula: Formula, lot: IngredientLot, quantity: Decimal) -> Decimal:
    ing = next(i for i in formula.ingredients if i.name == lot.ingredient_name)
    return (ing.amount * quantity / _per_count(ing.per)).quantize(Decimal("0.001"))


def _unit(formula: Formula, lot: IngredientLot) -> str:
    return next(i.unit for i in formula.ingredients if i.name == lot.ingredient_name)


def _current_work(rx: Prescription, rx_row: dict[str, Any], users: dict[str, User], report: SeedReport) -> None:
    """Orders in progress go through the real workflow services, so the demo queue is true to life."""

    pharmacist = staff(users["pharmacist"].id, Role.PHARMACIST)
    checker = staff(users["pharmacist2"].id, Role.PHARMACIST)
    tech = staff(users["technician"].id, Role.TECHNICIAN)
    in_progress = [f for f in rx_row["fills"] if f["state"] != OrderState.DISPENSED]
    if rx.status == "active" and not in_progress and rx_row["refill_request"] is None:
        planning.replan_prescription(rx.id)
    if rx_row["refill_request"] == "open":
        planning.replan_prescription(rx.id)
        refill_requests.request(tech, rx.id, source=RequestSource.STAFF)
        report.add("refill requests", True)
    for fill in in_progress:
        state = fill["state"]
        order = order_flow.new_fill(pharmacist, rx)
        report.add("orders in progress", True)
        if state == OrderState.REQUESTED:
            continue
        target = OrderState.VERIFIED if state == OrderState.ON_HOLD else state
        orders.verify_order(pharmacist, order.id)
        if target in (OrderState.COMPOUNDING, OrderState.CHECKED, OrderState.READY):
            lots = _lots_for(rx.formula, today())
            orders.compound_order(tech, order.id, quantity_made=order.quantity, lots=[
                {"ingredient_lot_id": lot.id, "quantity_used": _used(rx.formula, lot, order.quantity),
                 "unit": _unit(rx.formula, lot)} for lot in lots])
        if target in (OrderState.CHECKED, OrderState.READY):
            orders.check_order(checker, order.id, qc_notes="Weights within range; appearance acceptable.")
        if target == OrderState.READY:
            order_flow.release(checker, order.id)
        if state == OrderState.ON_HOLD:
            orders.hold_order(pharmacist, order.id, fill.get("hold_reason") or "On hold")
