"""What every patient's history draws on, written once through the ORM (and reused by a later run): the bench staff,
the demo formulas and their two price lists, a quarterly delivery of every ingredient, the prescribers; and the
lookups the generator makes against them for each fill (the ingredient lots in date on a day, the price then)."""
from __future__ import annotations

import random
import secrets
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from pharmacy.bench.people import CITIES, FIRST, LAST, STREETS
from pharmacy.billing.models import Fee, PriceEntry
from pharmacy.billing.pricing import quote
from pharmacy.compounding.models import Formula, FormulaIngredient, IngredientLot
from pharmacy.compounding.rules import DeliveryMethod, UspCategory
from pharmacy.core import uow
from pharmacy.core.actor import Actor
from pharmacy.core.models import User
from pharmacy.core.npi import npi_check_digit
from pharmacy.core.roles import Role
from pharmacy.core.services import create_user
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescriber
from pharmacy.prescriptions.rules import Form

SEEDS_DIR = Path(__file__).resolve().parents[2] / "seeds"
BENCH_STAFF = (
    ("bench-admin@pharmacy.example", "Bench Admin", Role.ADMIN),
    ("bench-pharmacist@pharmacy.example", "Dr. Bench Pharmacist, PharmD", Role.PHARMACIST),
    ("bench-checker@pharmacy.example", "Dr. Bench Checker, PharmD", Role.PHARMACIST),
    ("bench-technician@pharmacy.example", "Bench Technician, CPhT", Role.TECHNICIAN),
)


@dataclass(frozen=True)
class FormulaFacts:
    id: int
    code: str
    form: Form
    strength: Decimal
    category: UspCategory
    lead_time: int
    ingredients: tuple[str, ...]
    units: tuple[tuple[str, Decimal, str, Decimal], ...]  # (name, amount, unit, per-count)



def _npi(n: int) -> str:
    first_nine = f"{150000000 + n:09d}"
    return first_nine + str(npi_check_digit(first_nine))


def _per_count(per: str) -> Decimal:
    head = per.strip().split(" ", 1)[0]
    try:
        return Decimal(head)
    except ArithmeticError:
        return Decimal(100)


class Catalog:
    """The reference rows of one run, read back as plain values (call `load()` inside an app context)."""

    def __init__(self, *, n_patients: int, seed: int, years: int, start: date, today: date, now: datetime, tz: Any,
                 password: str | None) -> None:
        # The run's own values (generator.Generator decides them, the history's first day included), not re-derived.
        self.n_patients, self.seed, self.years, self.password = n_patients, seed, years, password
        self.start, self.today, self.now, self.tz = start, today, now, tz
        self._quotes: dict[tuple[int, Decimal, DeliveryMethod, bool], tuple[int, int, int]] = {}

    def load(self) -> Catalog:
        """What every patient's history draws on, written once (and reused on a later run): the staff, the
        formulas and their prices, a quarterly delivery of every ingredient, the prescribers."""
        self._staff()
        self._formulas()
        self._prices()
        self._ingredient_lots()
        self._prescribers()
        uow.commit_step()
        return self

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
            f.code: FormulaFacts(f.id, f.code, f.form, f.strength_mg, f.usp_category, f.lead_time_business_days,
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

    def lots_on(self, f: FormulaFacts, day: date) -> list[tuple[int, date, str, Decimal, str, Decimal]]:
        out = []
        for name, amount, unit, per in f.units:
            received, info = self.lots[name]
            k = bisect_right(received, day) - 1
            lot_id, expiry = info[max(k, 0)]
            out.append((lot_id, expiry, name, amount, unit, per))
        return out

    def quote(self, formula_id: int, quantity: Decimal, method: DeliveryMethod, old: bool) -> tuple[int, int, int]:
        """(price, shipping, price entry) from last year's list (`old`) or the current one; a handful of distinct
        quotes over a million fills, so each is worked out once."""
        key = (formula_id, quantity, method, old)
        hit = self._quotes.get(key)
        if hit is None:
            q = quote(formula_id, quantity, method, entries=self.price_lists[(formula_id, old)],
                      shipping_cents=self.shipping_cents)
            hit = self._quotes[key] = (q.price_cents, q.shipping_cents, int(q.price_entry_id or 0))
        return hit
