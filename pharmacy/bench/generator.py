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

Where each part lives: the made-up names in `people`, the reference rows (staff, formulas, prices, ingredient lots,
prescribers) in `catalog`, how values are stored and the per-table buffers in `storage` and `writer`, what is
remembered of a patient while writing in `records`, the present (open work, planned reminders) in `present`; the
history — patients, prescriptions, fills and what came with them — here.
"""
from __future__ import annotations

import json
import math
import random
import time as _time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from pharmacy.bench import present
from pharmacy.bench.catalog import Catalog, FormulaFacts
from pharmacy.bench.people import CITIES, CONDITIONS, EFFECTS, FIRST, LAST, MEDICATIONS, STREETS
from pharmacy.bench.records import (
    Fill,
    PatientFacts,
    Rx,
    directions_for,
    milli,
    quantity_for,
    steps_of,
    used_milli,
)
from pharmacy.bench.storage import Stored, open_tables
from pharmacy.bench.writer import GenReport, peak_rss_mb
from pharmacy.billing import totals
from pharmacy.billing.rules import PaymentKind, PaymentMethod
from pharmacy.compounding import rules as comp_rules
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.core import uow
from pharmacy.core.context import now, settings, today
from pharmacy.extensions import db
from pharmacy.prescriptions.rules import DosingTime, Form, RxStatus, Severity
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import rules as reminder_rules
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import rules as supply_rules

DISPENSED = OrderState.DISPENSED.value
SHIP, PICKUP = DeliveryMethod.SHIP.value, DeliveryMethod.PICKUP.value
PAYMENT = PaymentKind.PAYMENT.value
METHODS = tuple(m.value for m in (PaymentMethod.CARD, PaymentMethod.CARD, PaymentMethod.HSA_FSA, PaymentMethod.CASH,
                                   PaymentMethod.CHECK))


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
        self.created_credentials: list[tuple[str, str, str]] = []

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> GenReport:
        t0 = _time.perf_counter()
        self.catalog = Catalog(n_patients=self.n_patients, seed=self.seed, years=self.years, start=self.start,
                               today=self.today, now=self.now, tz=self.tz, password=self.password).load()
        self.staff, self.formulas = self.catalog.staff, self.catalog.formulas
        self.created_credentials = self.catalog.created_credentials
        conn = db.session.connection()
        pg = conn.dialect.name == "postgresql"
        if not pg:
            # Bulk load: the rows are consistent by construction (tests/integration/test_bench_generator.py runs
            # PRAGMA foreign_key_check on them), so per-row foreign key lookups are switched off for the load only;
            # a bigger page cache keeps the index B-trees in memory. Both are reset in _finish().
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-65536")
        stored = Stored(pg, self.tz)
        self.at, self.d, self.b, self.true, self.instant = stored.at, stored.d, stored.b, stored.true, stored.instant
        w, self.out = open_tables(conn, self.batch_size)
        self.w = w
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

    def next_id(self, table: str) -> int:
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
        pid = self.next_id("patients")
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
        self.out.patients.add(
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
                self.out.effects.add(id=self.next_id("side_effects"), patient_id=pid, effect=eff, noted_on=self.d(noted),
                                   note=None, suggested_action="Discussed timing; continue and review in two weeks.",
                                   recorded_by_id=self.staff["pharmacist"], created_at=self.at(noted, 11))
        p = PatientFacts(pid, ships, shipping_days, opted_in, email is not None, liver, "interferon beta-1a" in meds)
        self._history(rng, p, start_day)

    def _history(self, rng: random.Random, p: PatientFacts, start_day: date) -> None:
        form_pick = rng.random()
        form = Form.CAPSULE if form_pick < 0.7 else Form.SUBLINGUAL_LIQUID if form_pick < 0.9 else Form.TRANSDERMAL_CREAM
        days_supply = 90 if form == Form.CAPSULE and rng.random() < 0.3 else 30
        titrate = rng.random() < 0.35
        stops = rng.random() < 0.2
        stop_day = start_day + timedelta(days=rng.randint(45, 900)) if stops else None
        prescriber_id = rng.choice(self.catalog.prescriber_ids)
        rx = self._new_rx(rng, p, form, days_supply, titrate, start_day - timedelta(days=rng.randint(1, 10)),
                          prescriber_id, None)
        chain = [rx]
        handed = start_day
        prev: Fill | None = None
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
                new.held(self.cfg.too_soon_percent, carried=rx.held(self.cfg.too_soon_percent))
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
        present.current(self, rng, p, rx)

    # -- prescriptions -------------------------------------------------------------------------------------

    def _new_rx(self, rng: random.Random, p: PatientFacts, form: Form, days_supply: int, titrate: bool, written: date,
                prescriber_id: int, replaces: int | None) -> Rx:
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
        return Rx(id=self.next_id("prescriptions"), number="", formula=f, dose=Decimal(dose),
                   steps=steps_of(steps), days_supply=days_supply, refills=refills, written=written,
                   expiry=written + timedelta(days=self.cfg.rx_valid_days), prescriber_id=prescriber_id,
                   quantity=quantity_for(f.form, f.strength, Decimal(dose), days_supply, steps_of(steps)),
                   maintenance_quantity=quantity_for(f.form, f.strength, Decimal(dose), days_supply, ()),
                   replaces_id=replaces)

    def _write_rx(self, p: PatientFacts, rx: Rx) -> None:
        f = rx.formula
        created = self.at(rx.written, 9, 30)
        last = rx.fills[-1] if rx.fills else None  # every fill of the chain so far is dispensed, in order
        held = rx.held(self.cfg.too_soon_percent)
        self.out.rx.add(
            id=rx.id, rx_number=f"RX{rx.id:06d}", patient_id=p.id, prescriber_id=rx.prescriber_id, formula_id=f.id,
            dose_mcg=int(rx.dose * 1000), titration=json.dumps([s.to_json() for s in rx.steps]) if rx.steps else None,
            dosing_time=DosingTime.BEDTIME.value, quantity_milli=int(rx.quantity * 1000), days_supply=rx.days_supply,
            refills_authorized=rx.refills, written_date=self.d(rx.written), expiry_date=self.d(rx.expiry),
            directions=directions_for(f.form, f.strength, rx.dose, rx.steps), indication="Multiple sclerosis",
            indication_code="G35", status=rx.status.value, status_reason=rx.status_reason, replaces_id=rx.replaces_id,
            created_by_id=self.staff["pharmacist"], created_at=created, updated_at=created,
            latest_fill_number=last.number if last else None, days_dispensed=held.days_dispensed,
            latest_days_supply=held.last_days, latest_run_out_date=self.d(held.run_out),
            latest_covered_from=self.d(held.covered_from), prior_run_out_date=self.d(held.prior_run_out))
        if p.liver:  # the liver alert, resolved by a pharmacist (a few left open for the dashboard)
            open_alert = rx.status == RxStatus.ACTIVE and rx.id % 7 == 0
            self.out.alerts.add(
                id=self.next_id("screening_alerts"), prescription_id=rx.id, order_id=None, code="liver_disease",
                severity=Severity.OVERRIDABLE_STOP.value,
                message='Liver condition on file ("fatty liver disease"): naltrexone is cleared by the liver. '
                        "A pharmacist must review and record a reason before filling.",
                created_at=created, current=self.b(True),
                resolved_by_id=None if open_alert else self.staff["pharmacist"],
                resolved_at=None if open_alert else self.at(rx.written, 11),
                resolution_reason=None if open_alert else "Liver panel normal per prescriber; benefit outweighs risk.")
        if p.interferon:
            self.out.alerts.add(
                id=self.next_id("screening_alerts"), prescription_id=rx.id, order_id=None, code="interferon_beta",
                severity=Severity.WARNING.value,
                message='Interferon beta ("interferon beta-1a"): possible interaction with LDN. '
                        "Tell the patient, and the prescriber if new symptoms appear.",
                created_at=created, current=self.b(True), resolved_by_id=None, resolved_at=None, resolution_reason=None)

    def _renewal_history(self, rng: random.Random, p: PatientFacts, old: Rx, new: Rx, written: date) -> None:
        asked = max(written - timedelta(days=rng.randint(5, 20)), old.written + timedelta(days=1))
        self.out.renewals.add(
            id=self.next_id("renewal_requests"), prescription_id=old.id, prescriber_id=old.prescriber_id, patient_id=p.id,
            state=RenewalState.RECEIVED.value, reason="no refills left or expires before run-out",
            created_at=self.at(asked, 10), sent_at=self.at(asked, 14), sent_by_id=self.staff["pharmacist"],
            resolved_at=self.at(written, 15), new_prescription_id=new.id)

    # -- fills -----------------------------------------------------------------------------------------------

    def lot_number(self, day: date) -> str:
        seq = self._lot_seq.get(day, 0) + 1
        self._lot_seq[day] = seq
        if seq <= 999:
            return comp_rules.lot_number(day, seq)
        # The product's lot number has room for 999 batches a day; past that (chain scale) one more digit.
        self.report.lot_numbers_over_999_a_day += 1
        return f"L{day:%y%m%d}-{seq:04d}"

    def price(self, f: FormulaFacts, quantity: Decimal, method: DeliveryMethod, day: date) -> tuple[int, int, int]:
        """The fill's (price, shipping, price entry) from the list in force on `day`."""
        return self.catalog.quote(f.id, quantity, method, day < self.catalog.price_cut)

    def _fill(self, rng: random.Random, p: PatientFacts, rx: Rx, handed: date, prev: Fill | None) -> Fill:
        number = len(rx.fills)
        method = DeliveryMethod.SHIP if p.ships else DeliveryMethod.PICKUP
        dispensed_on = handed + timedelta(days=p.shipping_days if p.ships else 0)
        quantity = rx.quantity if number == 0 else rx.maintenance_quantity
        order_id = self.next_id("orders")
        compounded = handed - timedelta(days=rng.choice((1, 1, 2, 3)))
        requested = compounded - timedelta(days=rng.choice((0, 1, 1, 2)))
        lots = self.catalog.lots_on(rx.formula, compounded)
        bud = comp_rules.beyond_use_date(rx.formula.category, compounded, [x[1] for x in lots])
        price, ship, entry = self.price(rx.formula, quantity, method, requested)
        before = rx.held(self.cfg.too_soon_percent)
        earliest = before.earliest_next_start  # the day the patient may have it; a parcel may leave earlier
        if earliest is not None and p.ships:
            earliest = supply_rules.earliest_leaving_day(earliest, p.shipping_days)
        rx.supply = supply_rules.after_dispensing(before, supply_rules.Dispensing(dispensed_on, rx.days_supply))
        staff = self.staff
        at = self.at
        self.out.orders.add(
            id=order_id, prescription_id=rx.id, patient_id=p.id, fill_number=number, authorized_fill=number,
            state=DISPENSED, held_from=None, state_changed_at=at(handed, 12), quantity_milli=milli(quantity),
            days_supply=rx.days_supply, cap_note=None, earliest_dispense_date=self.d(earliest),
            delivery_method=SHIP if p.ships else PICKUP, carrier="USPS" if p.ships else None,
            tracking_number=f"9400{order_id:012d}" if p.ships else None, lot_number=self.lot_number(compounded),
            bud=self.d(bud), quantity_made_milli=milli(quantity), qc_yield_milli=100_000, qc_passed=self.true,
            qc_notes=None, verified_by_id=staff["pharmacist"], verified_at=at(requested, 14),
            compounded_by_id=staff["technician"], compounded_at=at(compounded, 10),
            checked_by_id=staff["checker"], checked_at=at(compounded, 15), released_by_id=staff["checker"],
            released_at=at(compounded, 16), dispensed_by_id=staff["technician"], dispensed_at=at(handed, 12),
            dispensed_on=self.d(handed), supply_starts_on=self.d(dispensed_on), run_out_date=self.d(rx.supply.run_out),
            batch_planned_at=at(compounded, 9), batch_planned_by_id=staff["technician"],
            hold_reason=None, cancel_reason=None, price_cents=price, shipping_cents=ship, price_entry_id=entry,
            created_by_id=staff["pharmacist"], created_at=at(requested, 9, rng.randrange(60)),
            updated_at=at(handed, 12))
        add_lot = self.out.lots.rows.append
        for lot_id, _expiry, _name, amount, unit, per in lots:
            self.ids["order_ingredient_lots"] += 1
            add_lot((self.ids["order_ingredient_lots"], order_id, lot_id, used_milli(amount, quantity, per), unit))
        fill = Fill(order_id, number, handed, dispensed_on, rx.days_supply, method, price + ship)
        rx.fills.append(fill)
        self._around_the_fill(rng, p, rx, fill, prev, requested=requested, compounded=compounded)
        return fill

    def _around_the_fill(self, rng: random.Random, p: PatientFacts, rx: Rx, fill: Fill, prev: Fill | None, *,
                         requested: date, compounded: date) -> None:
        """What came with a fill: its payment (a few recent ones still owed), the refill request it answered, the
        previous fill's reminders and the ready/shipped email."""
        staff, at, order_id, handed, method = self.staff, self.at, fill.order_id, fill.handed_on, fill.method
        recent = (self.today - handed).days < 45
        if not (recent and rng.random() < 0.03):  # a few recent fills are still unpaid (balance due)
            self.out.payments.add(
                id=self.next_id("payments"), patient_id=p.id, order_id=order_id, kind=PAYMENT,
                method=METHODS[rng.randrange(5)],
                amount_cents=fill.total_cents, received_at=at(handed, 13), reference=None, note=None,
                recorded_by_id=staff["technician"])
        if fill.number > 0 and rng.random() < 0.3:  # the patient asked (link, API or phone) and it was approved
            source = rng.choice((RequestSource.LINK, RequestSource.LINK, RequestSource.STAFF, RequestSource.API))
            self.out.requests.add(
                id=self.next_id("refill_requests"), prescription_id=rx.id, patient_id=p.id,
                state=RefillRequestState.APPROVED.value, source=source.value, delivery_method=method.value,
                requested_at=at(requested, 8, rng.randrange(60)),
                requested_by_id=staff["technician"] if source == RequestSource.STAFF else None,
                decided_at=at(requested, 9, 30), decided_by_id=staff["pharmacist"], decline_reason=None,
                order_id=order_id, renewal_id=None, note=None, run_out_date=None)
        if p.opted_in and p.has_email and prev is not None:
            self._previous_fill_reminders(rng, p, rx, prev, requested)
        if p.has_email and (self.today - handed).days < 180:
            kind = MessageKind.ORDER_SHIPPED if p.ships else MessageKind.ORDER_READY
            when = handed if p.ships else compounded
            self.outbox(p, rx, kind, f"{kind.value}:order:{order_id}", order_id=order_id, state=OutboxState.SENT,
                         due=at(when, 16), sent=at(when, 16, 1))

    def _previous_fill_reminders(self, rng: random.Random, p: PatientFacts, rx: Rx, prev: Fill, requested: date) -> None:
        """What the reminders of the previous fill did: the early one went out; later ones were cancelled."""
        order_by = prev.dispensed_on + timedelta(days=prev.days_supply - 6 - (p.shipping_days if p.ships else 0))
        early = order_by - timedelta(days=7)
        if early < requested:
            self.outbox(p, rx, MessageKind.REMINDER_EARLY, f"fill:{prev.order_id}:early_7", order_id=prev.order_id,
                         state=OutboxState.SENT, due=self.at(early, self.cfg.reminder_hour),
                         sent=self.at(early, self.cfg.reminder_hour, 1))
        if (self.today - requested).days < 120:
            self.outbox(p, rx, MessageKind.REMINDER_ORDER_BY, f"fill:{prev.order_id}:order_by", order_id=prev.order_id,
                         state=OutboxState.CANCELLED, due=self.at(order_by, self.cfg.reminder_hour),
                         reason="refill ordered", created=self.at(prev.handed_on, 12))

    def outbox(self, p: PatientFacts, rx: Rx, kind: MessageKind, key: str, *, state: OutboxState, due: Any,
                order_id: int | None = None, sent: Any = None, reason: str | None = None, created: Any = None,
                request_id: int | None = None, renewal_id: int | None = None, attempts: int | None = None,
                next_attempt: Any = None, lease: Any = None, claimed_by: str | None = None,
                error: str | None = None, to_address: str | None = None) -> int:
        oid = self.next_id("outbox")
        done = state in (OutboxState.SENT, OutboxState.FAILED)
        self.out.outbox.add(
            id=oid, dedupe_key=key, kind=kind.value, patient_id=p.id, prescription_id=rx.id, order_id=order_id,
            refill_request_id=request_id, renewal_id=renewal_id, to_address=to_address, due_at=due, state=state.value,
            next_attempt_at=next_attempt if next_attempt is not None else due, lease_until=lease, claimed_by=claimed_by,
            attempts=attempts if attempts is not None else (1 if done else 0), last_error=error, sent_at=sent,
            cancelled_reason=reason, message_id=reminder_rules.message_id(oid, key, self.domain),
            subject=self.subjects[kind] if state == OutboxState.SENT else None, body_text=None, body_html=None,
            created_at=created if created is not None else due)
        if state == OutboxState.SENT and sent is not None and self._recent(sent):
            self.out.attempts.add(id=self.next_id("delivery_attempts"), message_id=oid, at=sent, result="sent",
                                detail="smtp")
        elif state == OutboxState.FAILED or (attempts or 0) > 0:
            self.out.attempts.add(id=self.next_id("delivery_attempts"), message_id=oid, at=due,
                                result="permanent" if state == OutboxState.FAILED else "transient", detail=error)
        return oid

    def _recent(self, stored: Any) -> bool:
        return str(stored)[:10] >= (self.today - timedelta(days=30)).isoformat()


def generate(*, patients: int, seed: int = 42, years: int = 3, batch_size: int = 5000, password: str | None = None,
             on_progress: Callable[[int], None] = lambda _n: None) -> tuple[GenReport, list[tuple[str, str, str]]]:
    """Generate and commit; returns the report and any staff credentials created (role, email, password)."""
    gen = Generator(patients=patients, seed=seed, years=years, batch_size=batch_size, password=password,
                    on_progress=on_progress)
    report = gen.run()
    return report, gen.created_credentials
