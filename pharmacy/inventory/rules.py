"""Inventory rules (pure): units, the stock ledger's signs, what a lot's state is, low stock, first-expiry first-out.

docs/domain.md "Inventory, production and batches": each ingredient lot's stock is a ledger of moves (received,
used by a compounding, wasted, adjusted, counted); on hand is their sum. A recalled lot is quarantined and cannot
be chosen at compounding. Low stock is judged per ingredient against its reorder point, counting only lots that
can still be used.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum

from pharmacy.core.errors import ValidationFailed


class MoveKind(StrEnum):
    RECEIPT = "receipt"
    USE = "use"
    WASTE = "waste"
    ADJUST = "adjust"
    COUNT = "count"


MOVE_LABELS = {MoveKind.RECEIPT: "Received", MoveKind.USE: "Used", MoveKind.WASTE: "Wasted",
               MoveKind.ADJUST: "Adjusted", MoveKind.COUNT: "Counted"}


class UnitMismatch(ValidationFailed):
    """Two amounts that cannot be compared (grams against millilitres)."""

    code = "unit_mismatch"


# Each unit as (dimension, how many of the dimension's base unit it is): mass in mg, volume in mL, counts in each.
UNITS: dict[str, tuple[str, Decimal]] = {
    "mcg": ("mass", Decimal("0.001")), "mg": ("mass", Decimal(1)), "g": ("mass", Decimal(1000)),
    "kg": ("mass", Decimal(1_000_000)), "mL": ("volume", Decimal(1)), "L": ("volume", Decimal(1000)),
    "each": ("count", Decimal(1)),
}
_ALIASES = {"ml": "mL", "l": "L", "µg": "mcg", "ug": "mcg", "capsule": "each", "capsules": "each", "ea": "each",
            "units": "each", "unit": "each", "gm": "g", "gram": "g", "grams": "g"}
STOCK_UNITS = ("g", "mg", "kg", "mL", "L", "each")  # what the receiving form offers


def unit_of(text: str) -> str:
    """The canonical spelling of a unit ("ml" → "mL", "capsules" → "each"); ValidationFailed for an unknown one."""
    raw = (text or "").strip()
    unit = raw if raw in UNITS else _ALIASES.get(raw.lower())
    if unit is None:
        msg = f"Unknown unit {raw!r}: use one of {', '.join(STOCK_UNITS)}."
        raise ValidationFailed(msg, fields={"unit": msg})
    return unit


def convert(amount: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """`amount` of `from_unit` expressed in `to_unit` (exact decimals, 3 places kept by the caller's column)."""
    src, dst = unit_of(from_unit), unit_of(to_unit)
    (dim_a, fa), (dim_b, fb) = UNITS[src], UNITS[dst]
    if dim_a != dim_b:
        msg = f"{src} cannot be converted to {dst}."
        raise UnitMismatch(msg, fields={"unit": msg})
    return amount * fa / fb


def signed(kind: MoveKind, amount: Decimal) -> Decimal:
    """The ledger quantity of a move from the amount a person entered: receipts add, uses and waste take away,
    an adjustment keeps its sign (a found bottle +, a spill recorded late −)."""
    kind = MoveKind(kind)
    if kind is MoveKind.ADJUST:
        if amount == 0:
            raise ValidationFailed("An adjustment of 0 changes nothing.", fields={"quantity": "Not 0."})
        return amount
    if amount <= 0:
        raise ValidationFailed("Enter a quantity more than 0.", fields={"quantity": "More than 0."})
    return amount if kind is MoveKind.RECEIPT else -amount


def count_difference(on_hand: Decimal, counted: Decimal) -> Decimal:
    """A stock take: the ledger is corrected by counted − on hand (recorded, with the count, as one move)."""
    if counted < 0:
        raise ValidationFailed("A count cannot be negative.", fields={"quantity": "0 or more."})
    return counted - on_hand


class LotState(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"  # within the warning window
    EXPIRED = "expired"
    QUARANTINED = "quarantined"
    EMPTY = "empty"  # nothing left (or less than nothing: counted wrong somewhere — count it)
    UNTRACKED = "untracked"  # received before stock was kept: unknown until counted


def lot_state(*, expiry: date, quarantined: bool, on_hand: Decimal | None, day: date, warn_days: int) -> LotState:
    """One lot's state, the most pressing first: quarantined, expired, empty, not yet counted, expiring soon."""
    if quarantined:
        return LotState.QUARANTINED
    if expiry < day:
        return LotState.EXPIRED
    if on_hand is None:
        return LotState.UNTRACKED
    if on_hand <= 0:
        return LotState.EMPTY
    if expiry <= day + timedelta(days=warn_days):
        return LotState.EXPIRING
    return LotState.OK


def usable(*, expiry: date, quarantined: bool, day: date) -> bool:
    """A lot that may be chosen at compounding on `day` (docs/domain.md: unexpired, not quarantined)."""
    return not quarantined and expiry >= day


def is_low(usable_on_hand: Decimal, reorder_point: Decimal | None) -> bool:
    """Low stock: what can still be used is at or below the reorder point (no point set: never low)."""
    return reorder_point is not None and reorder_point > 0 and usable_on_hand <= reorder_point


@dataclass(frozen=True)
class LotLevel:
    """A usable lot's stock for projections: when it expires and how much is left (in one unit)."""

    lot_id: int
    expiry: date
    on_hand: Decimal
    label: str = ""  # "Medisca lot NTX-24117", for the page
    counted: bool = True  # False: received before stock was kept and not counted since — its quantity is unknown


def first_expiry_first(lots: Iterable[LotLevel]) -> list[LotLevel]:
    """The order the bench uses lots in: soonest expiry first (FEFO), then the lot received first."""
    return sorted(lots, key=lambda lot: (lot.expiry, lot.lot_id))


@dataclass(frozen=True)
class Projection:
    """How an ingredient's lots meet a plan's needs day by day (FEFO; a lot is no use after its expiry)."""

    short_on: date | None  # the first day the need is not met
    shortfall: Decimal  # how much is missing over the whole horizon
    left: Decimal  # what is left at the end (usable lots only)
    expiring_unused: Decimal  # what will expire on the shelf within the horizon
    first_lot: int | None  # the lot to use first


def project(needs: Sequence[tuple[date, Decimal]], lots: Iterable[LotLevel]) -> Projection:
    """Walk the days in order, taking each day's need from the soonest-expiring lot still good that day."""
    order = [[lot.expiry, lot.lot_id, lot.on_hand] for lot in first_expiry_first(lots) if lot.on_hand > 0]
    first_lot = order[0][1] if order else None
    short_on: date | None = None
    shortfall = Decimal(0)
    last_day: date | None = None
    for day, need in sorted(needs):
        last_day = day
        left = need
        for entry in order:
            if left <= 0:
                break
            if entry[0] < day or entry[2] <= 0:
                continue
            take = min(entry[2], left)
            entry[2] -= take
            left -= take
        if left > 0:
            shortfall += left
            short_on = short_on or day
    remaining = sum((e[2] for e in order if last_day is None or e[0] >= last_day), Decimal(0))
    expiring = sum((e[2] for e in order if last_day is not None and e[0] < last_day), Decimal(0))
    return Projection(short_on=short_on, shortfall=shortfall, left=remaining, expiring_unused=expiring,
                      first_lot=first_lot)
