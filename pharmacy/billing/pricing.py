"""Prices and quotes: the price list (with its history), the shipping fee, and the price of any fill, in cents.

Orders keep a snapshot of their quote, so a later price change never rewrites a past order: a change
retires the current entry (retired_at) and adds a new one.

Proration rule: a quantity on the list costs exactly its list price; any other quantity is priced
per unit from the nearest listed quantity (the smaller one on a tie), rounded half-up to the cent —
so 45 capsules from a 30-capsule entry at $55.00 cost $82.50. Shipping is one flat fee per fill.

docs/domain.md "Money": a price whose monthly equivalent (price × 30 / days supply) falls outside the
configured band is flagged for review, not silently accepted — set_price refuses it (422) until the
person explicitly confirms it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa

from pharmacy.billing import rules
from pharmacy.billing.models import Fee, PriceEntry
from pharmacy.billing.rules import Band
from pharmacy.compounding.models import Formula
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now, settings
from pharmacy.core.errors import Conflict, NotFound, ValidationFailed
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.prescriptions import rules as rx_rules

# PostgreSQL integer columns: a larger id can only be a typo or a probe, and must be a 404, not a 500.
MAX_ID = 2_147_483_647
MAX_SHIPPING_CENTS = 100_000  # $1,000: far above any courier fee, low enough to catch a typo


class PriceOutOfBand(ValidationFailed):
    """A price whose monthly equivalent is outside the band, not (yet) explicitly accepted."""

    code = "price_out_of_band"


def check_id(value: int | None, what: str) -> None:
    if value is not None and not 1 <= value <= MAX_ID:
        raise NotFound(f"No such {what}.")


def band() -> Band:
    cfg = settings()
    return Band(cfg.price_band_min_cents, cfg.price_band_max_cents)


@dataclass(frozen=True)
class Quote:
    price_cents: int
    shipping_cents: int
    price_entry_id: int | None
    prorated: bool

    @property
    def total_cents(self) -> int:
        return self.price_cents + self.shipping_cents


# Read for every quote (the refill page, its emails, the patient page), built once: constructing a statement costs
# more than the database's answer.
_CURRENT_ENTRIES = (sa.select(PriceEntry).where(PriceEntry.formula_id == sa.bindparam("b_formula", type_=sa.Integer),
                                                PriceEntry.retired_at.is_(None)).order_by(PriceEntry.quantity))
_CURRENT_ENTRIES_FOR = (
    sa.select(PriceEntry).where(PriceEntry.formula_id.in_(sa.bindparam("b_formulas", expanding=True, type_=sa.Integer)),
                                PriceEntry.retired_at.is_(None)).order_by(PriceEntry.formula_id, PriceEntry.quantity))
_SHIPPING_FEE = (sa.select(Fee.amount_cents).where(Fee.code == "shipping", Fee.retired_at.is_(None))
                 .order_by(Fee.effective_at.desc()).limit(1))


def current_entries(formula_id: int) -> list[PriceEntry]:
    return list(db.session.execute(_CURRENT_ENTRIES, {"b_formula": formula_id}).scalars())


def shipping_fee_cents() -> int:
    fee = db.session.execute(_SHIPPING_FEE).scalar_one_or_none()
    return int(fee or 0)


def quote(formula_id: int, quantity: Decimal, delivery: DeliveryMethod, *, entries: list[PriceEntry] | None = None,
          shipping_cents: int | None = None) -> Quote:
    """Exact list price when the quantity is on the list; otherwise pro-rated per unit from the nearest entry."""
    entries = current_entries(formula_id) if entries is None else entries
    if not entries:
        raise ValidationFailed("This formula has no price on the price list yet.", fields={"formula_id": "No price."})
    exact = next((e for e in entries if e.quantity == quantity), None)
    if exact is not None:
        price, entry, prorated = exact.price_cents, exact, False
    else:
        entry = min(entries, key=lambda e: (abs(e.quantity - quantity), e.quantity))
        price = int((Decimal(entry.price_cents) * quantity / entry.quantity).quantize(Decimal(1), ROUND_HALF_UP))
        prorated = True
    ship = 0
    if delivery == DeliveryMethod.SHIP:
        ship = shipping_fee_cents() if shipping_cents is None else shipping_cents
    return Quote(price_cents=price, shipping_cents=ship, price_entry_id=entry.id, prorated=prorated)


def price_for_quantity(price_entry_id: int | None, quoted_cents: int, quoted_quantity: Decimal,
                       quantity: Decimal) -> int:
    """An order's price when its quantity changes after it was priced (a BUD that caps the days, a re-made batch).

    The order keeps its quote (docs/domain.md "Money": a later price change never rewrites an order): the same
    quantity keeps the same price, and another quantity is priced from the entry it was quoted from — even when that
    entry has been retired or replaced since — or, without one, pro-rated from the order's own price per unit."""
    if quantity == quoted_quantity:
        return quoted_cents
    entry = db.session.get(PriceEntry, price_entry_id) if price_entry_id is not None else None
    if entry is not None:
        return quote(entry.formula_id, quantity, DeliveryMethod.PICKUP, entries=[entry]).price_cents
    if quoted_quantity <= 0:
        return quoted_cents
    return int((Decimal(quoted_cents) * quantity / quoted_quantity).quantize(Decimal(1), ROUND_HALF_UP))


def current_entries_for(formula_ids: list[int]) -> dict[int, list[PriceEntry]]:
    """Current entries of several formulas in one query (a patient's regimen, a report), by formula id."""
    out: dict[int, list[PriceEntry]] = {fid: [] for fid in formula_ids}
    if not formula_ids:
        return out
    rows = db.session.execute(_CURRENT_ENTRIES_FOR, {"b_formulas": formula_ids}).scalars()
    for entry in rows:
        out[entry.formula_id].append(entry)
    return out


def quoted_days_supply(formula_id: int, quantity: Decimal, *, entries: list[PriceEntry] | None = None) -> int | None:
    """The supply a quoted quantity makes: the entry's own days when listed, else pro-rated like the price.

    Used to show a quote's monthly equivalent when the caller does not know the days supply; None
    when the formula has no price. Half-up to whole days, never below 1.
    """
    entries = current_entries(formula_id) if entries is None else entries
    if not entries:
        return None
    exact = next((e for e in entries if e.quantity == quantity), None)
    if exact is not None:
        return exact.days_supply
    entry = min(entries, key=lambda e: (abs(e.quantity - quantity), e.quantity))
    days = (Decimal(entry.days_supply) * quantity / entry.quantity).quantize(Decimal(1), ROUND_HALF_UP)
    return max(int(days), 1)


# ---------------------------------------------------------------------------------------------
# Price list
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceRow:
    id: int
    formula_id: int
    formula_code: str
    formula_name: str
    form: str
    product: str
    quantity: Decimal
    quantity_text: str
    days_supply: int
    price_cents: int
    monthly_equivalent_cents: int
    band: str  # "below", "within", "above"
    effective_at: datetime
    retired_at: datetime | None

    @property
    def out_of_band(self) -> bool:
        return self.band != "within"


@dataclass(frozen=True)
class FormulaChoice:
    id: int
    code: str
    name: str


@dataclass
class PriceList:
    rows: list[PriceRow]
    shipping_cents: int
    band: Band
    formulas: list[FormulaChoice]
    include_retired: bool = False


def price_row(entry: PriceEntry, formula: Formula, price_band: Band) -> PriceRow:
    monthly = rules.monthly_equivalent_cents(entry.price_cents, entry.days_supply)
    return PriceRow(
        id=entry.id, formula_id=formula.id, formula_code=formula.code, formula_name=formula.name,
        form=formula.form.value, product=rx_rules.product_name(formula.form, formula.strength_mg),
        quantity=entry.quantity, quantity_text=rx_rules.quantity_text(formula.form, entry.quantity),
        days_supply=entry.days_supply, price_cents=entry.price_cents, monthly_equivalent_cents=monthly,
        band=rules.band_status(monthly, price_band), effective_at=entry.effective_at, retired_at=entry.retired_at,
    )


def price_rows(*, formula_id: int | None = None, include_retired: bool = False,
               out_of_band_only: bool = False) -> list[PriceRow]:
    """Entries with their monthly equivalent and band flag: one query (the list is short, hundreds at most)."""
    stmt = sa.select(PriceEntry, Formula).join(Formula, Formula.id == PriceEntry.formula_id)
    if formula_id is not None:
        stmt = stmt.where(PriceEntry.formula_id == formula_id)
    if not include_retired:
        stmt = stmt.where(PriceEntry.retired_at.is_(None))
    stmt = stmt.order_by(Formula.code, PriceEntry.quantity, PriceEntry.effective_at.desc(), PriceEntry.id.desc())
    price_band = band()
    rows = [price_row(entry, formula, price_band) for entry, formula in db.session.execute(stmt).all()]
    return [r for r in rows if r.out_of_band] if out_of_band_only else rows


def formula_choices() -> list[FormulaChoice]:
    return [FormulaChoice(f.id, f.code, f.name) for f in db.session.execute(
        sa.select(Formula).where(Formula.active.is_(True)).order_by(Formula.code)).scalars()]


def price_list(actor: Actor, *, formula_id: int | None = None, include_retired: bool = False,
               for_edit: bool = False) -> PriceList:
    """The price list page and API: every staff role may read prices (they quote them to patients);
    `for_edit` (re-showing a refused change) demands the right to change them."""
    audit.require(actor, Permission.MANAGE_PRICES if for_edit else Permission.VIEW_BILLING,
                  what="change prices" if for_edit else "see the price list")
    return PriceList(rows=price_rows(formula_id=formula_id, include_retired=include_retired),
                     shipping_cents=shipping_fee_cents(), band=band(), formulas=formula_choices(),
                     include_retired=include_retired)


def _band_message(monthly: int, status: str, price_band: Band) -> str:
    where = "below" if status == "below" else "above"
    return (f"{rules.format_cents(monthly)} a month is {where} the expected "
            f"{rules.format_cents(price_band.min_cents)}–{rules.format_cents(price_band.max_cents)} band. "
            "Check the price and the days supply; to keep it, confirm “accept out-of-band price”.")


def set_price(actor: Actor, *, formula_id: int, quantity: Decimal, days_supply: int, price_cents: int,
              accept_out_of_band: bool = False) -> PriceRow:
    """Add or change the price of a formula and quantity: the current entry is retired, never rewritten.

    docs/domain.md "Money": a price whose monthly equivalent is outside the band is flagged for review,
    not silently accepted — so it is refused (422, PriceOutOfBand) unless the person confirms it.
    Orders keep their own price snapshot, so nothing already ordered changes.
    """
    audit.require(actor, Permission.MANAGE_PRICES, what="change prices")
    errors: dict[str, str] = {}
    if not 1 <= days_supply <= 366:
        errors["days_supply"] = "Enter a days supply between 1 and 366."
    if quantity <= 0 or quantity != quantity.quantize(Decimal("0.001")):
        errors["quantity"] = "Enter a quantity above 0 (at most 3 decimals)."
    if not 0 <= price_cents <= rules.MAX_AMOUNT_CENTS:
        errors["price"] = f"Enter a price between $0.00 and {rules.format_cents(rules.MAX_AMOUNT_CENTS)}."
    if errors:
        raise ValidationFailed("The price was not saved.", fields=errors)
    formula = None
    if 1 <= formula_id <= MAX_ID:
        # Locking the formula serialises two people changing its prices at the same moment.
        formula = db.session.execute(sa.select(Formula).where(Formula.id == formula_id).with_for_update()).scalar_one_or_none()
    if formula is None:
        raise ValidationFailed("The price was not saved.", fields={"formula_id": "Choose a formula from the list."})
    price_band = band()
    monthly = rules.monthly_equivalent_cents(price_cents, days_supply)
    status = rules.band_status(monthly, price_band)
    if status != "within" and not accept_out_of_band:
        raise PriceOutOfBand(_band_message(monthly, status, price_band),
                             fields={"accept_out_of_band": _band_message(monthly, status, price_band)})
    current = list(db.session.execute(
        sa.select(PriceEntry).where(PriceEntry.formula_id == formula.id, PriceEntry.quantity == quantity,
                                    PriceEntry.retired_at.is_(None))
    ).scalars())
    unchanged = next((e for e in current if e.price_cents == price_cents and e.days_supply == days_supply), None)
    if unchanged is not None and len(current) == 1:
        return price_row(unchanged, formula, price_band)  # saving the same price twice changes nothing
    t = now()
    for old in current:
        old.retired_at = t
    entry = PriceEntry(formula_id=formula.id, quantity=quantity, days_supply=days_supply, price_cents=price_cents,
                       effective_at=t, retired_at=None, created_by_id=actor.user_id)
    db.session.add(entry)
    db.session.flush()
    audit.record(actor, "price.set", entity=("price_entry", entry.id),
                 details={"formula": formula.id, "replaces": [e.id for e in current], "band": status,
                          "accepted_out_of_band": status != "within"})
    return price_row(entry, formula, price_band)


def retire_price(actor: Actor, entry_id: int) -> PriceRow:
    """Take a quantity off the list (no replacement); quotes then pro-rate from the remaining entries."""
    audit.require(actor, Permission.MANAGE_PRICES, what="change prices")
    check_id(entry_id, "price entry")
    row = db.session.execute(
        sa.select(PriceEntry, Formula).join(Formula, Formula.id == PriceEntry.formula_id)
        .where(PriceEntry.id == entry_id).with_for_update(of=PriceEntry)
    ).first()
    if row is None:
        raise NotFound("No such price entry.")
    entry, formula = row
    if entry.retired_at is not None:
        raise Conflict("This price was already retired.")
    entry.retired_at = now()
    db.session.flush()
    audit.record(actor, "price.retire", entity=("price_entry", entry.id), details={"formula": formula.id})
    return price_row(entry, formula, band())


def set_shipping_fee(actor: Actor, amount_cents: int) -> int:
    """Change the flat shipping fee: the current fee is retired and a new one starts now."""
    audit.require(actor, Permission.MANAGE_PRICES, what="change prices")
    if not 0 <= amount_cents <= MAX_SHIPPING_CENTS:
        message = f"Enter a fee between $0.00 and {rules.format_cents(MAX_SHIPPING_CENTS)}."
        raise ValidationFailed("The shipping fee was not saved.", fields={"shipping_fee": message})
    current = list(db.session.execute(
        sa.select(Fee).where(Fee.code == "shipping", Fee.retired_at.is_(None)).with_for_update()).scalars())
    if len(current) == 1 and current[0].amount_cents == amount_cents:
        return amount_cents
    t = now()
    for old in current:
        old.retired_at = t
    fee = Fee(code="shipping", amount_cents=amount_cents, effective_at=t, retired_at=None)
    db.session.add(fee)
    db.session.flush()
    audit.record(actor, "fee.set", entity=("fee", fee.id), details={"code": "shipping"})
    return amount_cents


# ---------------------------------------------------------------------------------------------
# Quotes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteView:
    formula: FormulaChoice
    product: str
    quantity: Decimal
    quantity_text: str
    delivery: DeliveryMethod
    price_cents: int
    shipping_cents: int
    total_cents: int
    prorated: bool
    price_entry_id: int | None
    days_supply: int | None
    monthly_equivalent_cents: int | None
    band: str | None


def quote_for(actor: Actor, *, formula_id: int, quantity: Decimal, delivery: DeliveryMethod,
              days_supply: int | None = None) -> QuoteView:
    """What a fill of any formula and quantity costs today (list price, or pro-rated; plus shipping)."""
    audit.require(actor, Permission.VIEW_BILLING, what="quote prices")
    formula = db.session.get(Formula, formula_id) if 1 <= formula_id <= MAX_ID else None
    if formula is None:
        raise ValidationFailed("No quote.", fields={"formula_id": "Choose a formula from the list."})
    if quantity <= 0:
        raise ValidationFailed("No quote.", fields={"quantity": "Enter a quantity above 0."})
    entries = current_entries(formula.id)
    q = quote(formula.id, quantity, DeliveryMethod(delivery), entries=entries)
    days = days_supply or quoted_days_supply(formula.id, quantity, entries=entries)
    monthly = rules.monthly_equivalent_cents(q.price_cents, days) if days else None
    return QuoteView(
        formula=FormulaChoice(formula.id, formula.code, formula.name),
        product=rx_rules.product_name(formula.form, formula.strength_mg), quantity=quantity,
        quantity_text=rx_rules.quantity_text(formula.form, quantity), delivery=DeliveryMethod(delivery),
        price_cents=q.price_cents, shipping_cents=q.shipping_cents, total_cents=q.total_cents, prorated=q.prorated,
        price_entry_id=q.price_entry_id, days_supply=days, monthly_equivalent_cents=monthly,
        band=rules.band_status(monthly, band()) if monthly is not None else None,
    )


@dataclass
class QuotePage:
    formulas: list[FormulaChoice]
    quote: QuoteView | None = None


def quote_page(actor: Actor, *, formula_id: int | None = None, quantity: Decimal | None = None,
               delivery: DeliveryMethod = DeliveryMethod.PICKUP, days_supply: int | None = None) -> QuotePage:
    """The quote page: the formulas to choose from and, once asked, the quote."""
    audit.require(actor, Permission.VIEW_BILLING, what="quote prices")
    page = QuotePage(formulas=formula_choices())
    if formula_id is not None and quantity is not None:
        page.quote = quote_for(actor, formula_id=formula_id, quantity=quantity, delivery=delivery, days_supply=days_supply)
    return page
