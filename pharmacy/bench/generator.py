"""Chain-scale data for benchmarks: `flask bench seed --patients 100000` (~1,000,000 fills over 3 years).

What it writes, per patient, dated relative to "today" of the app's clock:

* the patient (contact, conditions, reminder preference, pickup or shipping);
* a chain of prescriptions (one of the three forms; about a third start with a titration plan),
  each renewed by the next one when its refills run out or it expires — the old one `replaced`,
  a `received` renewal request linking the two — or `discontinued` when the patient stopped;
* every fill as the workflow would have left it (verified, compounded with ingredient lots,
  checked, released, dispensed; run-out = dispensed-on + days supply; fill numbers 0, 1, 2 … per
  prescription; the too-soon date; the price from the price list then in force), and its payment;
* refill requests behind a share of the refills (approved, linked to their order), and a few open
  ones; a few open orders in every state of the workflow, and cancelled ones;
* the email outbox in every state: sent history, cancelled reminders, and — for the latest fill
  of each active prescription — exactly the pending rows `reminders.planning.plan_messages`
  plans (so a re-plan of the generated data changes nothing), a few of them `sending` with an
  expired lease, retrying after a failure, or `failed`; renewal tasks where planning wants them.

Rows are generated patient by patient from a random generator seeded with (seed, patient number),
buffered per table and written in batches — SQLite through SQLAlchemy Core statements executed
with executemany, PostgreSQL with COPY — so memory stays flat whatever the size: nothing holds a
whole table. Ids are assigned here (after the current maximum of each table), so the same seed and
the same "today" give the same rows.
"""
from __future__ import annotations

import json
import math
import random
import secrets
import time as _time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from pharmacy.bench.writer import GenReport, Writer, peak_rss_mb
from pharmacy.billing import totals
from pharmacy.billing.models import Fee, PriceEntry
from pharmacy.billing.pricing import quote
from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.compounding import rules as comp_rules
from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot
from pharmacy.compounding.rules import DeliveryMethod, OrderState, UspCategory
from pharmacy.core import uow
from pharmacy.core.actor import Actor
from pharmacy.core.context import business_calendar, now, settings, today
from pharmacy.core.models import User
from pharmacy.core.npi import npi_check_digit
from pharmacy.core.roles import Role
from pharmacy.core.services import create_user
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules
from pharmacy.prescriptions.models import Prescriber
from pharmacy.prescriptions.rules import DosingTime, Form, RxStatus, Severity
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import planning
from pharmacy.reminders import rules as reminder_rules
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import rules as supply_rules

SEEDS_DIR = Path(__file__).resolve().parents[2] / "seeds"
BENCH_STAFF = (
    ("bench-admin@pharmacy.example", "Bench Admin", Role.ADMIN),
    ("bench-pharmacist@pharmacy.example", "Dr. Bench Pharmacist, PharmD", Role.PHARMACIST),
    ("bench-checker@pharmacy.example", "Dr. Bench Checker, PharmD", Role.PHARMACIST),
    ("bench-technician@pharmacy.example", "Bench Technician, CPhT", Role.TECHNICIAN),
)
DISPENSED = OrderState.DISPENSED.value
SHIP, PICKUP = DeliveryMethod.SHIP.value, DeliveryMethod.PICKUP.value
PAYMENT = PaymentKind.PAYMENT.value
METHODS = tuple(m.value for m in (PaymentMethod.CARD, PaymentMethod.CARD, PaymentMethod.HSA_FSA, PaymentMethod.CASH,
                                   PaymentMethod.CHECK))
OPEN_STATES = (OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED,
               OrderState.READY, OrderState.ON_HOLD)

FIRST = ("Margaret", "James", "Linda", "Robert", "Patricia", "Michael", "Barbara", "William", "Elizabeth", "David",
         "Jennifer", "Richard", "Maria", "Joseph", "Susan", "Thomas", "Dorothy", "Charles", "Lisa", "Daniel",
         "Nancy", "Matthew", "Karen", "Anthony", "Betty", "Mark", "Helen", "Donald", "Sandra", "Steven", "Ana",
         "Paul", "Donna", "Andrew", "Carol", "Joshua", "Ruth", "Kenneth", "Sharon", "Kevin", "Michelle", "Brian",
         "Laura", "George", "Sarah", "Timothy", "Kimberly", "Ronald", "Deborah", "Jason", "Priya", "Wei", "Aisha")
LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
        "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams",
        "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Okafor", "Patel", "Kim")
CITIES = (("Springfield", "IL", "627"), ("Chicago", "IL", "606"), ("St. Louis", "MO", "631"),
          ("Peoria", "IL", "616"), ("Champaign", "IL", "618"), ("Indianapolis", "IN", "462"),
          ("Madison", "WI", "537"), ("Milwaukee", "WI", "532"), ("Des Moines", "IA", "503"),
          ("Columbia", "MO", "652"))
STREETS = ("Oak Lane", "Maple Avenue", "Washington Street", "Lincoln Road", "Elm Street", "Cedar Court",
           "Park Avenue", "Lakeview Drive", "Hickory Way", "Prairie Road")
CONDITIONS = ("multiple sclerosis", "fibromyalgia", "crohn's disease", "chronic fatigue syndrome", "long covid",
              "complex regional pain syndrome", "hashimoto's thyroiditis", "ulcerative colitis")
MEDICATIONS = ("vitamin d3 2000 IU", "gabapentin 300 mg", "baclofen 10 mg", "levothyroxine 50 mcg",
               "sertraline 50 mg", "magnesium glycinate", "ocrelizumab", "metformin 500 mg")
EFFECTS = ("vivid_dreams", "insomnia", "headache", "nausea", "morning_stiffness")


@dataclass(frozen=True)
class _Formula:
    id: int
    code: str
    form: Form
    strength: Decimal
    category: UspCategory
    lead_time: int
    ingredients: tuple[str, ...]
    units: tuple[tuple[str, Decimal, str, Decimal], ...]  # (name, amount, unit, per-count)


@dataclass
class _Rx:
    id: int
    number: str
    formula: _Formula
    dose: Decimal
    steps: tuple[rx_rules.TitrationStep, ...]
    days_supply: int
    refills: int
    written: date
    expiry: date
    prescriber_id: int
    quantity: Decimal
    maintenance_quantity: Decimal
    status: RxStatus = RxStatus.ACTIVE
    status_reason: str | None = None
    replaces_id: int | None = None
    fills: list[_Fill] = field(default_factory=list)
    supply: supply_rules.Supply | None = None  # the supply model, walked fill by fill (as supply/services does)

    def held(self, too_soon_percent: int, carried: date | None = None) -> supply_rules.Supply:
        if self.supply is None:
            auth = supply_rules.Authorization(days_per_fill=self.days_supply, refills=self.refills,
                                              expiry_date=self.expiry)
            self.supply = supply_rules.supply_from_cache(auth, days_dispensed=0, dispensings=0, run_out=carried,
                                                         last_days=None, too_soon_percent=too_soon_percent)
        return self.supply


@dataclass
class _Fill:
    order_id: int
    number: int
    handed_on: date  # the day it was handed over or shipped (the order's dispensed_on)
    dispensed_on: date  # the supply's first day (handed_on + shipping days when shipped: supply_starts_on)
    days_supply: int
    method: DeliveryMethod
    total_cents: int


def _npi(n: int) -> str:
    first_nine = f"{150000000 + n:09d}"
    return first_nine + str(npi_check_digit(first_nine))


def _per_count(per: str) -> Decimal:
    head = per.strip().split(" ", 1)[0]
    try:
        return Decimal(head)
    except ArithmeticError:
        return Decimal(100)


class Generator:
    """One run of `flask bench seed` (call inside an app context)."""

    def __init__(self, *, patients: int, seed: int = 42, years: int = 3, batch_size: int = 5000,
                 password: str | None = None, on_progress: Callable[[int], None] = lambda _n: None) -> None:
        if patients < 1:
            raise ValueError("--patients must be at least 1")
        if not 1 <= years <= 10:
            raise ValueError("--years must be between 1 and 10")
        self.n_patients = patients
        self.seed = seed
        self.years = years
        self.batch_size = batch_size
        self.password = password
        self.on_progress = on_progress
        self.cfg = settings()
        self.tz = self.cfg.timezone
        self.today = today()
        self.now = now()
        self.start = self.today - timedelta(days=365 * years)
        self.report = GenReport(patients=patients, today=self.today)
        self._lot_seq: dict[date, int] = {}
        self.domain = self.cfg.mail_from.rsplit("@", 1)[-1].strip(" >") or "pharmacy.local"

    # -- how values are stored ------------------------------------------------------------------------

    def _converters(self, pg: bool) -> None:
        tz = self.tz

        @cache
        def hour_utc(day: date, hour: int) -> datetime:
            return datetime.combine(day, dtime(hour), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)

        if pg:
            def at(day: date, hour: int, minute: int = 0) -> Any:
                base = hour_utc(day, hour)
                return base + timedelta(minutes=minute) if minute else base

            self.d: Callable[[date | None], Any] = lambda x: x
            self.b: Callable[[bool], Any] = lambda x: x
            self.true: Any = True
            self.instant: Callable[[datetime], Any] = lambda x: x.astimezone(UTC).replace(tzinfo=None)
        else:
            # The exact text SQLAlchemy's SQLite types write, so ranges and comparisons behave the same.
            @cache
            def hour_text(day: date, hour: int) -> str:
                return f"{hour_utc(day, hour):%Y-%m-%d %H:%M:%S}.000000"

            minutes = [f"{m:02d}" for m in range(60)]

            def at(day: date, hour: int, minute: int = 0) -> Any:
                base = hour_text(day, hour)
                if not minute:
                    return base
                if base[14:16] == "00":  # a whole-hour UTC offset: the minutes carry over unchanged
                    return base[:14] + minutes[minute] + base[16:]
                return f"{hour_utc(day, hour).replace(minute=0) + timedelta(minutes=minute):%Y-%m-%d %H:%M:%S}.000000"

            self.d = lru_cache(maxsize=4096)(lambda x: None if x is None else x.isoformat())
            self.b = lambda x: int(x)
            self.true = 1
            self.instant = lambda x: f"{x.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{x.microsecond:06d}"
        self.at = at

    # -- reference data (small; through the ORM) ---------------------------------------------------------

    def _reference_data(self) -> None:
        """What every patient's history draws on, written once (and reused on a later run): the staff, the
        formulas and their prices, a quarterly delivery of every ingredient, the prescribers."""
        self._staff()
        self._formulas()
        self._prices()
        self._ingredient_lots()
        self._prescribers()
        uow.commit_step()

    def _staff(self) -> None:
        console = Actor(kind="staff", role=Role.ADMIN)
        self.staff: dict[str, int] = {}
        self.created_credentials: list[tuple[str, str, str]] = []
        for key, (email, name, role) in zip(("admin", "pharmacist", "checker", "technician"), BENCH_STAFF,
                                            strict=True):
            user = db.session.execute(sa.select(User).where(User.email == email)).scalar_one_or_none()
            if user is None:

                password = self.password or secrets.token_urlsafe(12)
                user = create_user(console, email=email, full_name=name, role=role, password=password)
                self.created_credentials.append((role.value, email, password))
            self.staff[key] = user.id

    def _formulas(self) -> None:
        """The demo formulas (seeds/formulas.yaml), added if missing; the five LDN products must be there."""
        doc = yaml.safe_load((SEEDS_DIR / "formulas.yaml").read_text())
        for row in doc["formulas"]:
            f = db.session.execute(sa.select(Formula).where(Formula.code == row["code"])).scalar_one_or_none()
            if f is None:
                f = Formula(code=row["code"], name=row["name"], form=Form(row["form"]),
                            strength_mg=Decimal(str(row["strength_mg"])), usp_category=UspCategory(row["usp_category"]),
                            storage=row["storage"], container=row["container"], method=row["method"],
                            equipment=row.get("equipment"), calculations=row.get("calculations"),
                            quality_checks=row.get("quality_checks"), lead_time_business_days=row["lead_time_business_days"],
                            active=True, created_at=self.now)
                f.ingredients = [
                    FormulaIngredient(position=i, name=x["name"], salt_form=x.get("salt_form"),
                                      amount=Decimal(str(x["amount"])), unit=x["unit"], per=x["per"],
                                      active_ingredient=bool(x.get("active")))
                    for i, x in enumerate(row["ingredients"])
                ]
                db.session.add(f)
        db.session.flush()
        formulas = db.session.execute(sa.select(Formula).where(Formula.active.is_(True))).scalars().all()
        self.formulas = {
            f.code: _Formula(f.id, f.code, f.form, f.strength_mg, f.usp_category, f.lead_time_business_days,
                             tuple(i.name for i in f.ingredients),
                             tuple((i.name, i.amount, i.unit, _per_count(i.per)) for i in f.ingredients))
            for f in formulas
        }
        missing = {"LDN-CAP-1.5", "LDN-CAP-3", "LDN-CAP-4.5", "LDN-SL-1", "LDN-TD-0.5"} - set(self.formulas)
        if missing:
            raise RuntimeError(f"formulas missing after loading seeds/formulas.yaml: {sorted(missing)}")

    def _prices(self) -> None:
        """Last year's price list (retired a year ago) and the current one, from seeds/prices.yaml; the shipping fee."""
        prices = yaml.safe_load((SEEDS_DIR / "prices.yaml").read_text())
        self.price_cut = self.today - timedelta(days=365)
        cut_at = datetime.combine(self.price_cut, dtime(0), tzinfo=self.tz)
        for row in prices["prices"]:
            f = self.formulas[row["formula"]]
            qty = Decimal(str(row["quantity"]))
            current = db.session.execute(sa.select(PriceEntry.id).where(
                PriceEntry.formula_id == f.id, PriceEntry.quantity == qty, PriceEntry.retired_at.is_(None))).first()
            if current is None:
                db.session.add(PriceEntry(formula_id=f.id, quantity=qty, days_supply=row["days_supply"],
                                          price_cents=int(row["price_cents"] * 92 // 100),
                                          effective_at=cut_at - timedelta(days=365 * self.years),
                                          retired_at=cut_at, created_by_id=self.staff["admin"]))
                db.session.add(PriceEntry(formula_id=f.id, quantity=qty, days_supply=row["days_supply"],
                                          price_cents=row["price_cents"], effective_at=cut_at,
                                          created_by_id=self.staff["admin"]))
        if not db.session.execute(sa.select(Fee.id).where(Fee.code == "shipping", Fee.retired_at.is_(None))).first():
            db.session.add(Fee(code="shipping", amount_cents=895, effective_at=cut_at - timedelta(days=365 * self.years)))
        db.session.flush()
        self.shipping_cents = int(db.session.execute(
            sa.select(Fee.amount_cents).where(Fee.code == "shipping", Fee.retired_at.is_(None))
            .order_by(Fee.effective_at.desc()).limit(1)).scalar_one())
        self.price_lists: dict[tuple[int, bool], list[PriceEntry]] = {}
        for e in db.session.execute(sa.select(PriceEntry)).scalars():
            old = e.retired_at is not None
            self.price_lists.setdefault((e.formula_id, old), []).append(e)
        for key in list(self.price_lists):
            if (key[0], True) not in self.price_lists:
                self.price_lists[(key[0], True)] = self.price_lists[(key[0], False)]

    def _ingredient_lots(self) -> None:
        """A delivery of every ingredient each quarter, good for 18 months."""
        names = sorted({n for f in self.formulas.values() for n in f.ingredients})
        existing = {(s, n) for s, n in db.session.execute(sa.select(IngredientLot.supplier, IngredientLot.lot_number))}
        day = self.start - timedelta(days=120)
        while day <= self.today:
            for j, name in enumerate(names):
                number = f"BN{day:%y%m}-{j:02d}"
                if ("Medisca", number) not in existing:
                    db.session.add(IngredientLot(ingredient_name=name, supplier="Medisca", lot_number=number,
                                                 expiry_date=day + timedelta(days=540), received_on=day,
                                                 created_at=datetime.combine(day, dtime(12), tzinfo=self.tz)))
            day += timedelta(days=91)
        db.session.flush()
        self.lots: dict[str, tuple[list[date], list[tuple[int, date]]]] = {}
        for lot in db.session.execute(
            sa.select(IngredientLot).where(IngredientLot.received_on.is_not(None)).order_by(IngredientLot.received_on)
        ).scalars():
            received, info = self.lots.setdefault(lot.ingredient_name, ([], []))
            received.append(lot.received_on)
            info.append((lot.id, lot.expiry_date))

    def _prescribers(self) -> None:
        """One prescriber for every 50 patients (at least three), with valid NPIs."""
        existing_npis = set(db.session.execute(sa.select(Prescriber.npi)).scalars())
        wanted = max(3, self.n_patients // 50)
        rng = random.Random(self.seed)
        n = 0
        while len(existing_npis) < wanted + 3:
            npi = _npi(n)
            n += 1
            if npi in existing_npis:
                continue
            existing_npis.add(npi)
            first_name, last_name = rng.choice(FIRST), rng.choice(LAST)
            db.session.add(Prescriber(
                first_name=first_name, last_name=last_name, credentials=rng.choice(("MD", "DO", "NP", "MD")), npi=npi,
                phone=f"(217) 555-{rng.randrange(10000):04d}", email=f"{last_name.lower()}.{n}@clinic.example",
                address=f"{rng.randrange(100, 9999)} {rng.choice(STREETS)}, {rng.choice(CITIES)[0]}", created_at=self.now))
        db.session.flush()
        self.prescriber_ids = list(db.session.execute(sa.select(Prescriber.id).order_by(Prescriber.id)).scalars())

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> GenReport:
        t0 = _time.perf_counter()
        self._reference_data()
        conn = db.session.connection()
        pg = conn.dialect.name == "postgresql"
        if not pg:
            # Bulk load: the rows are consistent by construction (tests/integration/test_bench_generator.py runs
            # PRAGMA foreign_key_check on them), so per-row foreign key lookups are switched off for the load only;
            # a bigger page cache keeps the index B-trees in memory. Both are reset in _finish().
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-65536")
        self._converters(pg)
        self.calendar = business_calendar()
        w = self.w = self._sinks(conn)
        self.ids = {s.table.name: self._max_id(conn, s.table) for s in w.sinks}
        if self.ids["orders"]:
            self._continue_lot_sequences(conn)
        self.subjects = {k: reminder_rules.subject_line(self.cfg.pharmacy_name, k) for k in MessageKind}

        for i in range(self.n_patients):
            self._patient(i)
            w.maybe_flush()
            if (i + 1) % 1000 == 0 or i + 1 == self.n_patients:
                self.on_progress(min(1000, (i % 1000) + 1))
            if (i + 1) % 20000 == 0:
                w.flush()
                uow.commit_step()
                conn = db.session.connection()
                w.conn = conn
        w.flush()
        uow.commit_step()
        self._finish()
        self.report.seconds = _time.perf_counter() - t0
        self.report.rows = {s.table.name: s.written for s in w.sinks}
        self.report.peak_rss_mb = peak_rss_mb()
        return self.report

    def _sinks(self, conn: sa.Connection) -> Writer:
        """A buffer per table the generator writes, with the columns it fills (in the order it fills them)."""
        md = db.metadata.tables
        w = Writer(conn, self.batch_size)
        self.s_patients = w.sink(md["patients"], (
            "id", "first_name", "last_name", "name_key", "date_of_birth", "email", "phone", "address_line1",
            "address_line2", "city", "state", "postal_code", "conditions", "medications", "allergies",
            "reminders_opt_in", "delivery_preference", "shipping_days", "notes", "created_at", "updated_at"))
        self.s_effects = w.sink(md["side_effects"], (
            "id", "patient_id", "effect", "noted_on", "note", "suggested_action", "recorded_by_id", "created_at"))
        self.s_rx = w.sink(md["prescriptions"], (
            "id", "rx_number", "patient_id", "prescriber_id", "formula_id", "dose_mcg", "titration", "dosing_time",
            "quantity_milli", "days_supply", "refills_authorized", "written_date", "expiry_date", "directions",
            "indication", "indication_code", "status", "status_reason", "replaces_id", "created_by_id", "created_at",
            "updated_at", "latest_fill_number", "latest_run_out_date", "days_dispensed", "latest_days_supply"))
        self.s_renewals = w.sink(md["renewal_requests"], (
            "id", "prescription_id", "prescriber_id", "patient_id", "state", "reason", "created_at", "sent_at",
            "sent_by_id", "resolved_at", "new_prescription_id"))
        self.s_orders = w.sink(md["orders"], (
            "id", "prescription_id", "patient_id", "fill_number", "state", "held_from", "state_changed_at",
            "quantity_milli", "days_supply", "cap_note", "earliest_dispense_date", "delivery_method", "carrier",
            "tracking_number", "lot_number", "bud", "quantity_made_milli", "qc_yield_milli", "qc_passed", "qc_notes",
            "verified_by_id", "verified_at", "compounded_by_id", "compounded_at", "checked_by_id", "checked_at",
            "released_by_id", "released_at", "dispensed_by_id", "dispensed_at", "dispensed_on", "run_out_date",
            "hold_reason", "cancel_reason", "price_cents", "shipping_cents", "price_entry_id", "created_by_id",
            "created_at", "updated_at", "authorized_fill", "supply_starts_on", "batch_planned_at",
            "batch_planned_by_id"))
        self.s_lots = w.sink(md["order_ingredient_lots"], (
            "id", "order_id", "ingredient_lot_id", "quantity_used_milli", "unit"))
        self.s_alerts = w.sink(md["screening_alerts"], (
            "id", "prescription_id", "order_id", "code", "severity", "message", "created_at", "current",
            "resolved_by_id", "resolved_at", "resolution_reason"))
        self.s_requests = w.sink(md["refill_requests"], (
            "id", "prescription_id", "patient_id", "state", "source", "delivery_method", "requested_at",
            "requested_by_id", "decided_at", "decided_by_id", "decline_reason", "order_id", "renewal_id", "note"))
        self.s_payments = w.sink(md["payments"], (
            "id", "patient_id", "order_id", "kind", "method", "amount_cents", "received_at", "reference", "note",
            "recorded_by_id"))
        self.s_outbox = w.sink(md["outbox"], (
            "id", "dedupe_key", "kind", "patient_id", "prescription_id", "order_id", "refill_request_id",
            "renewal_id", "to_address", "due_at", "state", "next_attempt_at", "lease_until", "claimed_by",
            "attempts", "last_error", "sent_at", "cancelled_reason", "message_id", "subject", "body_text",
            "body_html", "created_at"))
        self.s_attempts = w.sink(md["delivery_attempts"], ("id", "message_id", "at", "result", "detail"))
        return w

    def _continue_lot_sequences(self, conn: sa.Connection) -> None:
        """Adding to a database that has orders: each day's lot sequence goes on after the numbers taken."""
        orders = db.metadata.tables["orders"]
        prefix = sa.func.substr(orders.c.lot_number, 1, 7)
        for head, n in conn.execute(sa.select(prefix, sa.func.count()).where(orders.c.lot_number.is_not(None))
                                    .group_by(prefix)):
            try:
                day = date(2000 + int(head[1:3]), int(head[3:5]), int(head[5:7]))
            except (TypeError, ValueError):
                continue
            self._lot_seq[day] = max(self._lot_seq.get(day, 0), int(n))

    def _max_id(self, conn: sa.Connection, table: sa.Table) -> int:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one())

    def _next(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def _finish(self) -> None:
        """The money reports' running totals (the rows went in around the session: billing/totals.py recomputes them
        in SQL), sequences past the ids written here (PostgreSQL), and fresh planner statistics."""
        t0 = _time.perf_counter()
        self.report.totals_rows = totals.rebuild()
        self.report.totals_seconds = round(_time.perf_counter() - t0, 1)
        uow.commit_step()
        conn = db.session.connection()
        if conn.dialect.name == "postgresql":
            for s in self.w.sinks:
                sql = (f"SELECT setval(pg_get_serial_sequence('{s.table.name}', 'id'), "  # noqa: S608 - our own table names
                       f"(SELECT COALESCE(MAX(id), 1) FROM \"{s.table.name}\"))")
                conn.execute(sa.text(sql))
            conn.execute(sa.text("ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")
        uow.commit_step()
        if conn.dialect.name == "sqlite":
            conn = db.session.connection()
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.exec_driver_sql("PRAGMA cache_size=-2000")
            uow.commit_step()

    # -- one patient ---------------------------------------------------------------------------------------

    def _patient(self, i: int) -> None:
        rng = random.Random(self.seed * 1_000_003 + i)
        pid = self._next("patients")
        first, last = rng.choice(FIRST), rng.choice(LAST)
        horizon = (self.today - self.start).days
        # A growing practice: more patients started recently (density rising toward today).
        start_day = self.start + timedelta(days=int(horizon * math.sqrt(rng.random())))
        start_day = min(start_day, self.today - timedelta(days=3))
        city, state, zip3 = rng.choice(CITIES)
        email = f"{first.lower()}.{last.lower()}.{pid}@example.com" if rng.random() < 0.88 else None
        ships = rng.random() < 0.4
        shipping_days = rng.choice((1, 2, 2, 3, 4)) if ships else 2
        conditions = [rng.choice(CONDITIONS)]
        liver = rng.random() < 0.01
        if liver:
            conditions.append("fatty liver disease")
        meds = rng.sample(MEDICATIONS, rng.choice((0, 0, 1, 2)))
        if rng.random() < 0.02:
            meds.append("interferon beta-1a")
        created = self.at(start_day - timedelta(days=rng.randint(1, 10)), 10, rng.randrange(60))
        opted_in = rng.random() < 0.9
        self.s_patients.add(
            id=pid, first_name=first, last_name=last, name_key=f"{last}, {first}".lower(),
            date_of_birth=self.d(date(rng.randint(1940, 2002), rng.randint(1, 12), rng.randint(1, 28))),
            email=email, phone=f"({zip3}) 555-{rng.randrange(10000):04d}",
            address_line1=f"{rng.randint(1, 9999)} {rng.choice(STREETS)}", address_line2=None, city=city, state=state,
            postal_code=f"{zip3}{rng.randrange(100):02d}", conditions=json.dumps(conditions), medications=json.dumps(meds),
            allergies="[]", reminders_opt_in=self.b(opted_in),
            delivery_preference=(DeliveryMethod.SHIP if ships else DeliveryMethod.PICKUP).value,
            shipping_days=shipping_days, notes=None, created_at=created, updated_at=created)
        if rng.random() < 0.05:
            eff = rng.choice(EFFECTS)
            noted = start_day + timedelta(days=rng.randint(3, 40))
            if noted <= self.today:
                self.s_effects.add(id=self._next("side_effects"), patient_id=pid, effect=eff, noted_on=self.d(noted),
                                   note=None, suggested_action="Discussed timing; continue and review in two weeks.",
                                   recorded_by_id=self.staff["pharmacist"], created_at=self.at(noted, 11))
        p = _Patient(pid, ships, shipping_days, opted_in, email is not None, liver, "interferon beta-1a" in meds)
        self._history(rng, p, start_day)

    def _history(self, rng: random.Random, p: _Patient, start_day: date) -> None:
        form_pick = rng.random()
        form = Form.CAPSULE if form_pick < 0.7 else Form.SUBLINGUAL_LIQUID if form_pick < 0.9 else Form.TRANSDERMAL_CREAM
        days_supply = 90 if form == Form.CAPSULE and rng.random() < 0.3 else 30
        titrate = rng.random() < 0.35
        stops = rng.random() < 0.2
        stop_day = start_day + timedelta(days=rng.randint(45, 900)) if stops else None
        prescriber_id = rng.choice(self.prescriber_ids)
        rx = self._new_rx(rng, p, form, days_supply, titrate, start_day - timedelta(days=rng.randint(1, 10)),
                          prescriber_id, None)
        chain = [rx]
        handed = start_day
        prev: _Fill | None = None
        while True:
            if stop_day is not None and handed >= stop_day:
                rx.status, rx.status_reason = RxStatus.DISCONTINUED, "Patient stopped LDN therapy"
                break
            if len(rx.fills) > rx.refills or handed > rx.expiry:
                # Renewed: the prescriber sent a new prescription; the old one is replaced.
                written = max(handed - timedelta(days=rng.randint(0, 6)), rx.written + timedelta(days=1))
                new = self._new_rx(rng, p, form, days_supply, False, written, prescriber_id, rx.id)
                rx.status, rx.status_reason = RxStatus.REPLACED, f"Renewed as RX{new.id:06d}"
                self._renewal_history(rng, p, rx, new, written)
                new.held(self.cfg.too_soon_percent, carried=rx.held(self.cfg.too_soon_percent).run_out)
                rx = new
                chain.append(rx)
                prev = None
            fill = self._fill(rng, p, rx, handed, prev)
            prev = fill
            gap = fill.days_supply + rng.randint(-3, 9 if fill.days_supply == 30 else 14)
            nxt = fill.dispensed_on + timedelta(days=gap) - timedelta(days=p.shipping_days if p.ships else 0)
            earliest_start = rx.held(self.cfg.too_soon_percent).earliest_next_start or nxt
            earliest = earliest_start - timedelta(days=p.shipping_days if p.ships else 0)
            handed = max(nxt, earliest, handed + timedelta(days=1))
            if handed > self.today:
                break
        for r in chain:
            self._write_rx(p, r)
        self._current(rng, p, rx)

    # -- prescriptions -------------------------------------------------------------------------------------

    def _new_rx(self, rng: random.Random, p: _Patient, form: Form, days_supply: int, titrate: bool, written: date,
                prescriber_id: int, replaces: int | None) -> _Rx:
        if form == Form.CAPSULE:
            code, dose = rng.choice((("LDN-CAP-4.5", "4.5"), ("LDN-CAP-4.5", "4.5"), ("LDN-CAP-3", "3"),
                                     ("LDN-CAP-1.5", "3"), ("LDN-CAP-1.5", "4.5")))
            if titrate:
                code = "LDN-CAP-1.5"
                steps = (("1.5", 14), ("3", 14))
        elif form == Form.SUBLINGUAL_LIQUID:
            code, dose = "LDN-SL-1", rng.choice(("4.5", "3", "4"))
            steps = (("1", 7), ("2", 7), ("3", 7)) if titrate else ()
        else:
            code, dose = "LDN-TD-0.5", rng.choice(("1.5", "2", "3"))
            steps = (("0.5", 14), ("1", 14)) if titrate else ()
        if not titrate:
            steps = ()
        if titrate and form == Form.CAPSULE and dose == "3":
            dose = "4.5"
        f = self.formulas[code]
        refills = 3 if days_supply == 90 else rng.choice((11, 11, 11, 5))
        return _Rx(id=self._next("prescriptions"), number="", formula=f, dose=Decimal(dose),
                   steps=_steps(steps), days_supply=days_supply, refills=refills, written=written,
                   expiry=written + timedelta(days=self.cfg.rx_valid_days), prescriber_id=prescriber_id,
                   quantity=_quantity(f.form, f.strength, Decimal(dose), days_supply, _steps(steps)),
                   maintenance_quantity=_quantity(f.form, f.strength, Decimal(dose), days_supply, ()),
                   replaces_id=replaces)

    def _write_rx(self, p: _Patient, rx: _Rx) -> None:
        f = rx.formula
        created = self.at(rx.written, 9, 30)
        last = rx.fills[-1] if rx.fills else None  # every fill of the chain so far is dispensed, in order
        held = rx.held(self.cfg.too_soon_percent)
        self.s_rx.add(
            id=rx.id, rx_number=f"RX{rx.id:06d}", patient_id=p.id, prescriber_id=rx.prescriber_id, formula_id=f.id,
            dose_mcg=int(rx.dose * 1000), titration=json.dumps([s.to_json() for s in rx.steps]) if rx.steps else None,
            dosing_time=DosingTime.BEDTIME.value, quantity_milli=int(rx.quantity * 1000), days_supply=rx.days_supply,
            refills_authorized=rx.refills, written_date=self.d(rx.written), expiry_date=self.d(rx.expiry),
            directions=_directions(f.form, f.strength, rx.dose, rx.steps), indication="Multiple sclerosis",
            indication_code="G35", status=rx.status.value, status_reason=rx.status_reason, replaces_id=rx.replaces_id,
            created_by_id=self.staff["pharmacist"], created_at=created, updated_at=created,
            latest_fill_number=last.number if last else None, days_dispensed=held.days_dispensed,
            latest_days_supply=held.last_days, latest_run_out_date=self.d(held.run_out))
        if p.liver:  # the liver alert, resolved by a pharmacist (a few left open for the dashboard)
            open_alert = rx.status == RxStatus.ACTIVE and rx.id % 7 == 0
            self.s_alerts.add(
                id=self._next("screening_alerts"), prescription_id=rx.id, order_id=None, code="liver_disease",
                severity=Severity.OVERRIDABLE_STOP.value,
                message='Liver condition on file ("fatty liver disease"): naltrexone is cleared by the liver. '
                        "A pharmacist must review and record a reason before filling.",
                created_at=created, current=self.b(True),
                resolved_by_id=None if open_alert else self.staff["pharmacist"],
                resolved_at=None if open_alert else self.at(rx.written, 11),
                resolution_reason=None if open_alert else "Liver panel normal per prescriber; benefit outweighs risk.")
        if p.interferon:
            self.s_alerts.add(
                id=self._next("screening_alerts"), prescription_id=rx.id, order_id=None, code="interferon_beta",
                severity=Severity.WARNING.value,
                message='Interferon beta ("interferon beta-1a"): possible interaction with LDN. '
                        "Tell the patient, and the prescriber if new symptoms appear.",
                created_at=created, current=self.b(True), resolved_by_id=None, resolved_at=None, resolution_reason=None)

    def _renewal_history(self, rng: random.Random, p: _Patient, old: _Rx, new: _Rx, written: date) -> None:
        asked = max(written - timedelta(days=rng.randint(5, 20)), old.written + timedelta(days=1))
        self.s_renewals.add(
            id=self._next("renewal_requests"), prescription_id=old.id, prescriber_id=old.prescriber_id, patient_id=p.id,
            state=RenewalState.RECEIVED.value, reason="no refills left or expires before run-out",
            created_at=self.at(asked, 10), sent_at=self.at(asked, 14), sent_by_id=self.staff["pharmacist"],
            resolved_at=self.at(written, 15), new_prescription_id=new.id)

    # -- fills -----------------------------------------------------------------------------------------------

    def _lot_number(self, day: date) -> str:
        seq = self._lot_seq.get(day, 0) + 1
        self._lot_seq[day] = seq
        if seq <= 999:
            return comp_rules.lot_number(day, seq)
        # The product's lot number has room for 999 batches a day; past that (chain scale) one more digit.
        self.report.lot_numbers_over_999_a_day += 1
        return f"L{day:%y%m%d}-{seq:04d}"

    def _lots_on(self, f: _Formula, day: date) -> list[tuple[int, date, str, Decimal, str, Decimal]]:
        out = []
        for name, amount, unit, per in f.units:
            received, info = self.lots[name]
            k = bisect_right(received, day) - 1
            lot_id, expiry = info[max(k, 0)]
            out.append((lot_id, expiry, name, amount, unit, per))
        return out

    def _price(self, f: _Formula, quantity: Decimal, method: DeliveryMethod, day: date) -> tuple[int, int, int]:
        return _quote(self, f.id, quantity, method, day < self.price_cut)

    def _fill(self, rng: random.Random, p: _Patient, rx: _Rx, handed: date, prev: _Fill | None) -> _Fill:
        number = len(rx.fills)
        method = DeliveryMethod.SHIP if p.ships else DeliveryMethod.PICKUP
        dispensed_on = handed + timedelta(days=p.shipping_days if p.ships else 0)
        quantity = rx.quantity if number == 0 else rx.maintenance_quantity
        order_id = self._next("orders")
        compounded = handed - timedelta(days=rng.choice((1, 1, 2, 3)))
        requested = compounded - timedelta(days=rng.choice((0, 1, 1, 2)))
        lots = self._lots_on(rx.formula, compounded)
        bud = comp_rules.beyond_use_date(rx.formula.category, compounded, [x[1] for x in lots])
        price, ship, entry = self._price(rx.formula, quantity, method, requested)
        before = rx.held(self.cfg.too_soon_percent)
        earliest = before.earliest_next_start
        rx.supply = supply_rules.after_dispensing(before, supply_rules.Dispensing(dispensed_on, rx.days_supply))
        staff = self.staff
        at = self.at
        self.s_orders.add(
            id=order_id, prescription_id=rx.id, patient_id=p.id, fill_number=number, authorized_fill=number,
            state=DISPENSED, held_from=None, state_changed_at=at(handed, 12), quantity_milli=_milli(quantity),
            days_supply=rx.days_supply, cap_note=None, earliest_dispense_date=self.d(earliest),
            delivery_method=SHIP if p.ships else PICKUP, carrier="USPS" if p.ships else None,
            tracking_number=f"9400{order_id:012d}" if p.ships else None, lot_number=self._lot_number(compounded),
            bud=self.d(bud), quantity_made_milli=_milli(quantity), qc_yield_milli=100_000, qc_passed=self.true,
            qc_notes=None, verified_by_id=staff["pharmacist"], verified_at=at(requested, 14),
            compounded_by_id=staff["technician"], compounded_at=at(compounded, 10),
            checked_by_id=staff["checker"], checked_at=at(compounded, 15), released_by_id=staff["checker"],
            released_at=at(compounded, 16), dispensed_by_id=staff["technician"], dispensed_at=at(handed, 12),
            dispensed_on=self.d(handed), supply_starts_on=self.d(dispensed_on), run_out_date=self.d(rx.supply.run_out),
            batch_planned_at=at(compounded, 9), batch_planned_by_id=staff["technician"],
            hold_reason=None, cancel_reason=None, price_cents=price, shipping_cents=ship, price_entry_id=entry,
            created_by_id=staff["pharmacist"], created_at=at(requested, 9, rng.randrange(60)),
            updated_at=at(handed, 12))
        add_lot = self.s_lots.rows.append
        for lot_id, _expiry, _name, amount, unit, per in lots:
            self.ids["order_ingredient_lots"] += 1
            add_lot((self.ids["order_ingredient_lots"], order_id, lot_id, _used_milli(amount, quantity, per), unit))
        fill = _Fill(order_id, number, handed, dispensed_on, rx.days_supply, method, price + ship)
        rx.fills.append(fill)
        self._around_the_fill(rng, p, rx, fill, prev, requested=requested, compounded=compounded)
        return fill

    def _around_the_fill(self, rng: random.Random, p: _Patient, rx: _Rx, fill: _Fill, prev: _Fill | None, *,
                         requested: date, compounded: date) -> None:
        """What came with a fill: its payment (a few recent ones still owed), the refill request it answered, the
        previous fill's reminders and the ready/shipped email."""
        staff, at, order_id, handed, method = self.staff, self.at, fill.order_id, fill.handed_on, fill.method
        recent = (self.today - handed).days < 45
        if not (recent and rng.random() < 0.03):  # a few recent fills are still unpaid (balance due)
            self.s_payments.add(
                id=self._next("payments"), patient_id=p.id, order_id=order_id, kind=PAYMENT,
                method=METHODS[rng.randrange(5)],
                amount_cents=fill.total_cents, received_at=at(handed, 13), reference=None, note=None,
                recorded_by_id=staff["technician"])
        if fill.number > 0 and rng.random() < 0.3:  # the patient asked (link, API or phone) and it was approved
            source = rng.choice((RequestSource.LINK, RequestSource.LINK, RequestSource.STAFF, RequestSource.API))
            self.s_requests.add(
                id=self._next("refill_requests"), prescription_id=rx.id, patient_id=p.id,
                state=RefillRequestState.APPROVED.value, source=source.value, delivery_method=method.value,
                requested_at=at(requested, 8, rng.randrange(60)),
                requested_by_id=staff["technician"] if source == RequestSource.STAFF else None,
                decided_at=at(requested, 9, 30), decided_by_id=staff["pharmacist"], decline_reason=None,
                order_id=order_id, renewal_id=None, note=None)
        if p.opted_in and p.has_email and prev is not None:
            self._previous_fill_reminders(rng, p, rx, prev, requested)
        if p.has_email and (self.today - handed).days < 180:
            kind = MessageKind.ORDER_SHIPPED if p.ships else MessageKind.ORDER_READY
            when = handed if p.ships else compounded
            self._outbox(p, rx, kind, f"{kind.value}:order:{order_id}", order_id=order_id, state=OutboxState.SENT,
                         due=at(when, 16), sent=at(when, 16, 1))

    def _previous_fill_reminders(self, rng: random.Random, p: _Patient, rx: _Rx, prev: _Fill, requested: date) -> None:
        """What the reminders of the previous fill did: the early one went out; later ones were cancelled."""
        order_by = prev.dispensed_on + timedelta(days=prev.days_supply - 6 - (p.shipping_days if p.ships else 0))
        early = order_by - timedelta(days=7)
        if early < requested:
            self._outbox(p, rx, MessageKind.REMINDER_EARLY, f"fill:{prev.order_id}:early_7", order_id=prev.order_id,
                         state=OutboxState.SENT, due=self.at(early, self.cfg.reminder_hour),
                         sent=self.at(early, self.cfg.reminder_hour, 1))
        if (self.today - requested).days < 120:
            self._outbox(p, rx, MessageKind.REMINDER_ORDER_BY, f"fill:{prev.order_id}:order_by", order_id=prev.order_id,
                         state=OutboxState.CANCELLED, due=self.at(order_by, self.cfg.reminder_hour),
                         reason="refill ordered", created=self.at(prev.handed_on, 12))

    def _outbox(self, p: _Patient, rx: _Rx, kind: MessageKind, key: str, *, state: OutboxState, due: Any,
                order_id: int | None = None, sent: Any = None, reason: str | None = None, created: Any = None,
                request_id: int | None = None, renewal_id: int | None = None, attempts: int | None = None,
                next_attempt: Any = None, lease: Any = None, claimed_by: str | None = None,
                error: str | None = None, to_address: str | None = None) -> int:
        oid = self._next("outbox")
        done = state in (OutboxState.SENT, OutboxState.FAILED)
        self.s_outbox.add(
            id=oid, dedupe_key=key, kind=kind.value, patient_id=p.id, prescription_id=rx.id, order_id=order_id,
            refill_request_id=request_id, renewal_id=renewal_id, to_address=to_address, due_at=due, state=state.value,
            next_attempt_at=next_attempt if next_attempt is not None else due, lease_until=lease, claimed_by=claimed_by,
            attempts=attempts if attempts is not None else (1 if done else 0), last_error=error, sent_at=sent,
            cancelled_reason=reason, message_id=reminder_rules.message_id(oid, key, self.domain),
            subject=self.subjects[kind] if state == OutboxState.SENT else None, body_text=None, body_html=None,
            created_at=created if created is not None else due)
        if state == OutboxState.SENT and sent is not None and self._recent(sent):
            self.s_attempts.add(id=self._next("delivery_attempts"), message_id=oid, at=sent, result="sent",
                                detail="smtp")
        elif state == OutboxState.FAILED or (attempts or 0) > 0:
            self.s_attempts.add(id=self._next("delivery_attempts"), message_id=oid, at=due,
                                result="permanent" if state == OutboxState.FAILED else "transient", detail=error)
        return oid

    def _recent(self, stored: Any) -> bool:
        return str(stored)[:10] >= (self.today - timedelta(days=30)).isoformat()

    # -- the present: open work and planned reminders ------------------------------------------------------

    def _current(self, rng: random.Random, p: _Patient, rx: _Rx) -> None:
        if rx.status != RxStatus.ACTIVE:
            if rx.status == RxStatus.DISCONTINUED and rx.fills and rng.random() < 0.5:
                self._cancelled_order(rng, p, rx)
            return
        if not rx.fills:
            return
        last = rx.fills[-1]
        held = rx.held(self.cfg.too_soon_percent)
        assert held.run_out is not None
        run_out = held.run_out
        refills_left = 1 if held.days_remaining else 0
        unexpired = self.today <= rx.expiry
        roll = rng.random()
        soon = (run_out - self.today).days <= 12
        if soon and unexpired and refills_left > 0 and roll < 0.12:
            self._open_order(rng, p, rx, last)
            return
        if soon and unexpired and refills_left > 0 and roll < 0.2:
            self._open_request(rng, p, rx, last, RefillRequestState.OPEN)
            return
        if soon and refills_left <= 0 and roll < 0.25:
            self._open_request(rng, p, rx, last, RefillRequestState.AWAITING_RENEWAL)
            return
        self._planned(rng, p, rx, last)

    def _facts(self, p: _Patient, rx: _Rx, fill: _Fill) -> planning.FillFacts:
        held = rx.held(self.cfg.too_soon_percent)
        assert held.run_out is not None
        return planning.FillFacts(
            order_id=fill.order_id, prescription_id=rx.id, patient_id=p.id, prescriber_id=rx.prescriber_id,
            run_out=held.run_out, delivery_method=fill.method, shipping_days=p.shipping_days, opted_in=p.opted_in,
            has_email=p.has_email, lead_time=rx.formula.lead_time, days_per_fill=rx.days_supply,
            refills_authorized=rx.refills, expiry_date=rx.expiry, days_dispensed=held.days_dispensed)

    def _planned(self, rng: random.Random, p: _Patient, rx: _Rx, last: _Fill) -> None:
        """Exactly what planning.plan_for_order would leave for this fill today, plus its sent history."""
        facts = self._facts(p, rx, last)
        pending = planning.plan_messages(facts, day=self.today)
        keys = {m.key for m in pending}
        recent = self.today - timedelta(days=7)
        for m in planning.plan_messages(facts, day=last.dispensed_on):
            if m.key not in keys and m.local_day < self.today:
                due = self.instant(m.send_at)
                key = f"fill:{last.order_id}:{m.key}"
                variant = rng.random() if m.local_day >= recent else 1.0
                if variant < 0.06:  # the mail server refused it: the pharmacist sees it on the dashboard
                    self._outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.FAILED, due=due,
                                 error="550: mailbox unavailable", attempts=1)
                elif variant < 0.09:  # a scheduler died while sending it: the lease has expired
                    self._outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.SENDING, due=due,
                                 lease=self.instant(self.now - timedelta(minutes=20)), claimed_by="bench:dead-worker")
                else:
                    self._outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.SENT, due=due,
                                 sent=self.instant(m.send_at + timedelta(seconds=30)))
        renewal_id = None
        for m in pending:
            if m.kind == MessageKind.RENEWAL_NEEDED and renewal_id is None:
                renewal_id = self._renewal_task(rng, p, rx)
            self._outbox(p, rx, m.kind, f"fill:{last.order_id}:{m.key}", order_id=last.order_id,
                         state=OutboxState.PENDING, due=self.instant(m.send_at), created=self.at(last.handed_on, 12))

    def _renewal_task(self, rng: random.Random, p: _Patient, rx: _Rx) -> int:
        rid = self._next("renewal_requests")
        sent = rng.random() < 0.3
        self.s_renewals.add(
            id=rid, prescription_id=rx.id, prescriber_id=rx.prescriber_id, patient_id=p.id,
            state=(RenewalState.SENT if sent else RenewalState.NEEDED).value,
            reason="no refills left or expires before run-out", created_at=self.at(self.today - timedelta(days=1), 10),
            sent_at=self.at(self.today - timedelta(days=1), 14) if sent else None,
            sent_by_id=self.staff["pharmacist"] if sent else None, resolved_at=None, new_prescription_id=None)
        if sent:
            self._outbox(p, rx, MessageKind.PRESCRIBER_RENEWAL, f"prescriber_renewal:{rid}", state=OutboxState.SENT,
                         due=self.at(self.today - timedelta(days=1), 14), sent=self.at(self.today - timedelta(days=1), 14, 1),
                         renewal_id=rid, to_address="renewals@clinic.example")
        return rid

    def _cancel_reminders(self, rng: random.Random, p: _Patient, rx: _Rx, last: _Fill, reason: str,
                          renewal_id: int | None = None) -> None:
        """The last fill's reminders once a refill is ordered (all cancelled) or requested (the renewal stays)."""
        facts = self._facts(p, rx, last)
        for m in planning.plan_messages(facts, day=self.today - timedelta(days=2)):
            key = f"fill:{last.order_id}:{m.key}"
            if m.kind == MessageKind.RENEWAL_NEEDED and reason == "refill requested":
                if renewal_id is None:
                    renewal_id = self._renewal_task(rng, p, rx)
                self._outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.PENDING,
                             due=self.instant(m.send_at), created=self.at(last.handed_on, 12))
                continue
            self._outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.CANCELLED,
                         due=self.instant(m.send_at), reason=reason, created=self.at(last.handed_on, 12))

    def _open_request(self, rng: random.Random, p: _Patient, rx: _Rx, last: _Fill, state: RefillRequestState) -> None:
        req_id = self._next("refill_requests")
        day = self.today - timedelta(days=rng.choice((1, 1, 2, 3)))
        renewal_id = self._renewal_task(rng, p, rx) if state == RefillRequestState.AWAITING_RENEWAL else None
        source = rng.choice((RequestSource.LINK, RequestSource.LINK, RequestSource.API, RequestSource.STAFF))
        self.s_requests.add(
            id=req_id, prescription_id=rx.id, patient_id=p.id, state=state.value, source=source.value,
            delivery_method=last.method.value, requested_at=self.at(day, 8, rng.randrange(60)),
            requested_by_id=self.staff["technician"] if source == RequestSource.STAFF else None, decided_at=None,
            decided_by_id=None, decline_reason=None, order_id=None, renewal_id=renewal_id, note=None)
        if p.has_email:
            kind = MessageKind.RENEWAL_IN_PROGRESS if renewal_id else MessageKind.REQUEST_RECEIVED
            if rng.random() < 0.1:  # the mail server timed out: pending again, retried with a backoff
                self._outbox(p, rx, kind, f"{kind.value}:request:{req_id}", state=OutboxState.PENDING,
                             due=self.at(day, 9), request_id=req_id, attempts=1, error="connection: TimeoutError",
                             next_attempt=self.instant(self.now + timedelta(minutes=5)))
            else:
                self._outbox(p, rx, kind, f"{kind.value}:request:{req_id}", state=OutboxState.SENT,
                             due=self.at(day, 9), sent=self.at(day, 9, 1), request_id=req_id)
        self._cancel_reminders(rng, p, rx, last, "refill requested", renewal_id)

    def _open_order(self, rng: random.Random, p: _Patient, rx: _Rx, last: _Fill) -> None:
        state = OPEN_STATES[rng.randrange(len(OPEN_STATES))]
        number = len(rx.fills)
        order_id = self._next("orders")
        day = self.today - timedelta(days=rng.choice((1, 1, 2, 3, 4)))
        method = last.method
        quantity = rx.maintenance_quantity
        price, ship, entry = self._price(rx.formula, quantity, method, day)
        staff, at = self.staff, self.at
        done = OPEN_STATES.index(state if state != OrderState.ON_HOLD else OrderState.VERIFIED)
        v: dict[str, Any] = {}
        if done >= 1:
            v.update(verified_by_id=staff["pharmacist"], verified_at=at(day, 11))
        if done >= 2:
            lots = self._lots_on(rx.formula, day)
            bud = comp_rules.beyond_use_date(rx.formula.category, day, [x[1] for x in lots])
            v.update(lot_number=self._lot_number(day), bud=self.d(bud), quantity_made_milli=int(quantity * 1000),
                     compounded_by_id=staff["technician"], compounded_at=at(day, 13))
            for lot_id, _e, _n, amount, unit, per in lots:
                self.s_lots.add(id=self._next("order_ingredient_lots"), order_id=order_id, ingredient_lot_id=lot_id,
                                quantity_used_milli=int(amount * quantity / per * 1000), unit=unit)
        if done >= 3:
            v.update(qc_yield_milli=100_000, qc_passed=self.b(True), checked_by_id=staff["checker"],
                     checked_at=at(day, 15))
        if done >= 4:
            v.update(released_by_id=staff["checker"], released_at=at(day, 16))
        if state == OrderState.ON_HOLD:
            v.update(held_from=OrderState.VERIFIED.value, hold_reason="Waiting for the prescriber to confirm the dose")
        earliest = rx.held(self.cfg.too_soon_percent).earliest_next_start
        self.s_orders.add(
            id=order_id, prescription_id=rx.id, patient_id=p.id, fill_number=number,
            authorized_fill=rx.held(self.cfg.too_soon_percent).current_fill or 0, state=state.value,
            state_changed_at=at(day, 16), quantity_milli=int(quantity * 1000), days_supply=rx.days_supply,
            earliest_dispense_date=self.d(earliest), delivery_method=method.value, price_cents=price,
            shipping_cents=ship, price_entry_id=entry, created_by_id=staff["pharmacist"],
            created_at=at(day, 9, rng.randrange(60)), updated_at=at(day, 16), **v)
        rx.fills.append(_Fill(order_id, number, day, day, rx.days_supply, method, price + ship))
        if rng.random() < 0.6:
            req_id = self._next("refill_requests")
            self.s_requests.add(
                id=req_id, prescription_id=rx.id, patient_id=p.id, state=RefillRequestState.APPROVED.value,
                source=RequestSource.LINK.value, delivery_method=method.value, requested_at=at(day, 8),
                requested_by_id=None, decided_at=at(day, 9), decided_by_id=staff["pharmacist"], decline_reason=None,
                order_id=order_id, renewal_id=None, note=None)
            if p.has_email:
                self._outbox(p, rx, MessageKind.REQUEST_APPROVED, f"request_approved:request:{req_id}",
                             state=OutboxState.SENT, due=at(day, 9), sent=at(day, 9, 1), request_id=req_id)
        if state == OrderState.READY and method == DeliveryMethod.PICKUP and p.has_email:
            self._outbox(p, rx, MessageKind.ORDER_READY, f"order_ready:order:{order_id}", order_id=order_id,
                         state=OutboxState.SENT, due=at(day, 16), sent=at(day, 16, 1))
        self._cancel_reminders(rng, p, rx, last, "refill ordered")

    def _cancelled_order(self, rng: random.Random, p: _Patient, rx: _Rx) -> None:
        last = rx.fills[-1]
        day = last.handed_on + timedelta(days=rng.randint(20, 28))
        if day > self.today:
            return
        quantity = rx.maintenance_quantity
        price, ship, entry = self._price(rx.formula, quantity, last.method, day)
        self.s_orders.add(
            id=self._next("orders"), prescription_id=rx.id, patient_id=p.id, fill_number=len(rx.fills),
            authorized_fill=rx.held(self.cfg.too_soon_percent).current_fill or 0,
            state=OrderState.CANCELLED.value, state_changed_at=self.at(day, 15), quantity_milli=int(quantity * 1000),
            days_supply=rx.days_supply, delivery_method=last.method.value, cancel_reason="Patient stopped LDN therapy",
            price_cents=price, shipping_cents=ship, price_entry_id=entry, created_by_id=self.staff["pharmacist"],
            created_at=self.at(day, 9), updated_at=self.at(day, 15))


@dataclass(frozen=True)
class _Patient:
    id: int
    ships: bool
    shipping_days: int
    opted_in: bool
    has_email: bool
    liver: bool
    interferon: bool


# ---- pure helpers, cached (a few dozen distinct inputs over a million fills) ---------------------------------


@cache
def _milli(value: Decimal) -> int:
    return int(value * 1000)


@cache
def _used_milli(amount: Decimal, quantity: Decimal, per: Decimal) -> int:
    return int(amount * quantity / per * 1000)


@cache
def _steps(raw: tuple[tuple[str, int], ...]) -> tuple[rx_rules.TitrationStep, ...]:
    return tuple(rx_rules.TitrationStep(Decimal(d), n) for d, n in raw)


@cache
def _quantity(form: Form, strength: Decimal, dose: Decimal, days: int,
              steps: tuple[rx_rules.TitrationStep, ...]) -> Decimal:
    return rx_rules.quantity_for_days(form, strength, dose, days, steps)


@cache
def _directions(form: Form, strength: Decimal, dose: Decimal, steps: tuple[rx_rules.TitrationStep, ...]) -> str:
    return rx_rules.directions(form, strength, dose, DosingTime.BEDTIME, steps)


_QUOTES: dict[tuple[int, Decimal, DeliveryMethod, bool], tuple[int, int, int]] = {}


def _quote(gen: Generator, formula_id: int, quantity: Decimal, method: DeliveryMethod, old: bool) -> tuple[int, int, int]:
    key = (formula_id, quantity, method, old)
    hit = _QUOTES.get(key)
    if hit is None:
        q = quote(formula_id, quantity, method, entries=gen.price_lists[(formula_id, old)],
                  shipping_cents=gen.shipping_cents)
        hit = _QUOTES[key] = (q.price_cents, q.shipping_cents, int(q.price_entry_id or 0))
    return hit


def generate(*, patients: int, seed: int = 42, years: int = 3, batch_size: int = 5000, password: str | None = None,
             on_progress: Callable[[int], None] = lambda _n: None) -> tuple[GenReport, list[tuple[str, str, str]]]:
    """Generate and commit; returns the report and any staff credentials created (role, email, password)."""
    _QUOTES.clear()
    gen = Generator(patients=patients, seed=seed, years=years, batch_size=batch_size, password=password,
                    on_progress=on_progress)
    report = gen.run()
    return report, gen.created_credentials
