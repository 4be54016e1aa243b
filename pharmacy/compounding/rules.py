"""Compounding rules (pure): USP <795> beyond-use dates, BUD-capped fills, the order workflow, QC and lots.

Every rule cites the section of docs/domain.md it implements.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from pharmacy.core.errors import Forbidden, InvalidTransition, ValidationFailed
from pharmacy.prescriptions.rules import Form, TitrationStep, quantity_for_days, remaining_steps
from pharmacy.supply.rules import Supply, fill_note


class UspCategory(StrEnum):
    """docs/domain.md "Compounding standards (USP <795>…)": the four default-BUD categories."""

    AQUEOUS_UNPRESERVED = "aqueous_unpreserved"
    AQUEOUS_PRESERVED = "aqueous_preserved"
    NONAQUEOUS_ORAL_LIQUID = "nonaqueous_oral_liquid"
    OTHER_NONAQUEOUS = "other_nonaqueous"


class OrderState(StrEnum):
    REQUESTED = "requested"
    VERIFIED = "verified"
    COMPOUNDING = "compounding"
    CHECKED = "checked"
    READY = "ready"
    DISPENSED = "dispensed"
    ON_HOLD = "on_hold"
    CANCELLED = "cancelled"


class DeliveryMethod(StrEnum):
    PICKUP = "pickup"
    SHIP = "ship"


class ExpiredIngredientError(ValidationFailed):
    """An ingredient lot past its expiry: docs/domain.md "A BUD never goes past the earliest expiry"."""

    code = "ingredient_expired"


# --------------------------------------------------------------------------------------------
# Beyond-use dates (docs/domain.md "Compounding standards (USP <795>, 2023 revision)")
# The older 6-month / 14-day / 30-day figures are obsolete and deliberately absent.
# --------------------------------------------------------------------------------------------
BUD_DAYS: dict[UspCategory, int] = {
    UspCategory.AQUEOUS_UNPRESERVED: 14,
    UspCategory.AQUEOUS_PRESERVED: 35,
    UspCategory.NONAQUEOUS_ORAL_LIQUID: 90,
    UspCategory.OTHER_NONAQUEOUS: 180,
}
STORAGE_TEXT: dict[UspCategory, str] = {
    UspCategory.AQUEOUS_UNPRESERVED: "Store in the refrigerator (2–8 °C / 36–46 °F).",
    UspCategory.AQUEOUS_PRESERVED: "Store at room temperature or in the refrigerator.",
    UspCategory.NONAQUEOUS_ORAL_LIQUID: "Store at room temperature or in the refrigerator.",
    UspCategory.OTHER_NONAQUEOUS: "Store at room temperature or in the refrigerator.",
}
CATEGORY_LABELS: dict[UspCategory, str] = {
    UspCategory.AQUEOUS_UNPRESERVED: "Aqueous, not preserved",
    UspCategory.AQUEOUS_PRESERVED: "Aqueous, preserved",
    UspCategory.NONAQUEOUS_ORAL_LIQUID: "Non-aqueous oral liquid",
    UspCategory.OTHER_NONAQUEOUS: "Other non-aqueous (capsules, non-aqueous topicals)",
}
# Which categories make sense for which form: capsules are solid (other non-aqueous); a sublingual
# liquid is an oral liquid (aqueous or not); a cream is aqueous or a non-aqueous topical.
CATEGORIES_FOR_FORM: dict[Form, frozenset[UspCategory]] = {
    Form.CAPSULE: frozenset({UspCategory.OTHER_NONAQUEOUS}),
    Form.SUBLINGUAL_LIQUID: frozenset({UspCategory.AQUEOUS_UNPRESERVED, UspCategory.AQUEOUS_PRESERVED,
                                       UspCategory.NONAQUEOUS_ORAL_LIQUID}),
    Form.TRANSDERMAL_CREAM: frozenset({UspCategory.AQUEOUS_UNPRESERVED, UspCategory.AQUEOUS_PRESERVED,
                                       UspCategory.OTHER_NONAQUEOUS}),
}


def check_category_for_form(form: Form, category: UspCategory) -> None:
    """A formula's USP category must fit its form, or its BUD would be wrong (e.g. a 180-day liquid)."""
    form, category = Form(form), UspCategory(category)
    if category not in CATEGORIES_FOR_FORM[form]:
        msg = f"{CATEGORY_LABELS[category]} is not a USP <795> category for a {form.value.replace('_', ' ')}."
        raise ValidationFailed(msg, fields={"usp_category": msg})


def beyond_use_date(category: UspCategory, compounded_on: date, ingredient_expiries: Sequence[date]) -> date:
    """docs/domain.md "Compounding standards": compounded date + the category's default BUD, never past the
    earliest expiry of an ingredient lot used. An ingredient is usable through its expiry date, so
    only one that expired *before* the compounding date is refused.
    """
    bud = compounded_on + timedelta(days=BUD_DAYS[UspCategory(category)])
    if ingredient_expiries:
        earliest = min(ingredient_expiries)
        if earliest < compounded_on:
            msg = (f"An ingredient lot expired on {earliest.isoformat()}, before compounding on "
                   f"{compounded_on.isoformat()}: use an unexpired lot.")
            raise ExpiredIngredientError(msg, fields={"ingredient_lots": msg})
        bud = min(bud, earliest)
    return bud


def days_until_bud(bud: date, dispensed_on: date) -> int:
    """Days of supply a batch can still cover when dispensed: the supply runs dispensed_on … bud − 1,
    so its run-out date (dispensed + days supply, docs/domain.md "Refill timing") is at most the BUD.
    """
    return max((bud - dispensed_on).days, 0)


@dataclass(frozen=True)
class FillPlan:
    """What one fill dispenses; `capped` when the BUD cut it short (the rest is owed on the same fill)."""

    quantity: Decimal
    days_supply: int
    capped: bool
    note: str | None = None
    bud: date | None = None
    authorized_fill: int = 0


def cap_to_bud(form: Form, strength_mg: Decimal, dose_mg: Decimal, *, quantity: Decimal, days_supply: int,
               bud_days: int, steps: Sequence[TitrationStep] = ()) -> FillPlan:
    """docs/domain.md "Compounding standards": "A fill may never be dispensed with a days-supply that outlasts
    its BUD: the quantity is capped and the rest becomes later fills." `bud_days` is the number of days
    the batch can still cover (see `days_until_bud`); the quantity for the capped days follows the
    titration plan, because a plan changes the daily amount. What the cap means for the fill (how much is
    still owed) is the supply model's to say: `plan_fill` adds it.
    """
    if days_supply < 1:
        raise ValidationFailed("Days supply must be at least 1 day.", fields={"days_supply": "At least 1 day."})
    if quantity <= 0:
        raise ValidationFailed("Quantity must be more than 0.", fields={"quantity": "Must be more than 0."})
    if bud_days < 1:
        msg = "The beyond-use date leaves no days of supply: compound a fresh batch."
        raise ValidationFailed(msg, fields={"days_supply": msg})
    if days_supply <= bud_days:
        return FillPlan(quantity, days_supply, False)
    return FillPlan(quantity_for_days(form, strength_mg, dose_mg, bud_days, steps), bud_days, True)


def plan_fill(current: Supply, *, form: Form, strength_mg: Decimal, dose_mg: Decimal,
              steps: Sequence[TitrationStep], category: UspCategory, compounded_on: date, starts_on: date,
              lot_expiries: Sequence[date] = ()) -> FillPlan:
    """The next dispensing of a prescription: the days still owed on its current fill, capped to the BUD.

    The one calculation behind the refill page's quote, the order that approving creates, the batch plan
    made when lots are chosen (before anyone compounds) and the patient's cost summary: the same supply,
    day and lots give the same days, quantity and note. `starts_on` is the day the patient will have it
    (shipping days later for a parcel), so a shipped fill's cap leaves room for the journey.
    docs/domain.md "Compounding standards": capped fills are partial fills of the same authorized fill.
    """
    owed = current.days_owed
    if owed < 1:
        msg = "Nothing is left to fill on this prescription: a renewal is needed."
        raise ValidationFailed(msg, fields={"days_supply": msg})
    bud = beyond_use_date(category, compounded_on, lot_expiries)
    # Counted from the first day of this fill's own doses: on an on-time refill the old bottle is finished first,
    # and a 14-day liquid's days must all fall before its BUD.
    usable = days_until_bud(bud, current.first_dose_day(starts_on))
    if usable < 1:
        msg = (f"With these lots the beyond-use date is {bud.isoformat()}, which leaves no days of supply when the "
               "patient receives it: use lots with a later expiry.")
        raise ValidationFailed(msg, fields={"lots": msg})
    ahead = remaining_steps(steps, current.days_dispensed)
    quantity = quantity_for_days(form, strength_mg, dose_mg, owed, ahead)
    plan = cap_to_bud(form, strength_mg, dose_mg, quantity=quantity, days_supply=owed, bud_days=usable, steps=ahead)
    note = fill_note(current, plan.days_supply, capped_by_bud=bud if plan.capped else None)
    return FillPlan(plan.quantity, plan.days_supply, plan.capped, note, bud, current.current_fill or 0)


# --------------------------------------------------------------------------------------------
# Order workflow. docs/domain.md "Compounding standards": the record is reviewed by a pharmacist
# before release; requested → verified → compounding → checked → ready → dispensed.
# Decisions: a hold can be placed at any open step and resumes exactly where it was held; a failed
# final check (checked → compounding) sends the order back to be re-made; dispensed and cancelled
# are final (a dispensed order is not "cancelled" — a return is a separate record).
# --------------------------------------------------------------------------------------------
S = OrderState
FORWARD: tuple[OrderState, ...] = (S.REQUESTED, S.VERIFIED, S.COMPOUNDING, S.CHECKED, S.READY, S.DISPENSED)
FINAL: frozenset[OrderState] = frozenset({S.DISPENSED, S.CANCELLED})
OPEN: frozenset[OrderState] = frozenset(FORWARD[:-1])  # may be held or cancelled
# An order still being worked on (held ones included): at most one per prescription at a time.
IN_PROGRESS: frozenset[OrderState] = frozenset(OrderState) - FINAL
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.REQUESTED: frozenset({S.VERIFIED, S.ON_HOLD, S.CANCELLED}),
    S.VERIFIED: frozenset({S.COMPOUNDING, S.ON_HOLD, S.CANCELLED}),
    S.COMPOUNDING: frozenset({S.CHECKED, S.ON_HOLD, S.CANCELLED}),
    S.CHECKED: frozenset({S.READY, S.COMPOUNDING, S.ON_HOLD, S.CANCELLED}),
    S.READY: frozenset({S.DISPENSED, S.ON_HOLD, S.CANCELLED}),
    S.ON_HOLD: frozenset(OPEN | {S.CANCELLED}),  # resume: only to the state it was held from
    S.DISPENSED: frozenset(),
    S.CANCELLED: frozenset(),
}
PERMISSION_FOR: dict[OrderState, str] = {  # target state -> core.roles.Permission value
    S.VERIFIED: "verify_order",
    S.COMPOUNDING: "compound",
    S.CHECKED: "check_order",
    S.READY: "check_order",
    S.DISPENSED: "dispense",
    S.ON_HOLD: "hold_order",
    S.CANCELLED: "cancel_order",
}
STATE_LABELS: dict[OrderState, str] = {
    S.REQUESTED: "Requested", S.VERIFIED: "Verified", S.COMPOUNDING: "Compounding", S.CHECKED: "Checked",
    S.READY: "Ready", S.DISPENSED: "Dispensed", S.ON_HOLD: "On hold", S.CANCELLED: "Cancelled",
}
_IS = {  # "An order that is …"
    S.REQUESTED: "only requested", S.VERIFIED: "verified", S.COMPOUNDING: "compounding", S.CHECKED: "checked",
    S.READY: "ready", S.DISPENSED: "dispensed", S.ON_HOLD: "on hold", S.CANCELLED: "cancelled",
}
_BE = {  # "… cannot be …" / "it must be … first"
    S.REQUESTED: "sent back to requested", S.VERIFIED: "verified", S.COMPOUNDING: "compounded",
    S.CHECKED: "checked", S.READY: "made ready", S.DISPENSED: "dispensed", S.ON_HOLD: "put on hold",
    S.CANCELLED: "cancelled",
}


# What the order page's buttons and the API's /transitions may ask for: a target state, "resume", or
# "plan_batch" (choose the lots before compounding — not a state change).
TRANSITION_TARGETS = ("verified", "plan_batch", "compounding", "checked", "ready", "dispensed", "on_hold", "cancelled",
                      "resume")


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def check_transition(current: OrderState, target: OrderState, *, held_from: OrderState | None = None) -> None:
    """Raise InvalidTransition, in words a pharmacist can act on, unless `current` → `target` is allowed."""
    current, target = OrderState(current), OrderState(target)
    head = f"An order that is {_IS[current]} cannot be {_BE[target]}"
    if current == target:
        raise InvalidTransition(f"This order is already {_IS[current]}.")
    if current in FINAL:
        raise InvalidTransition(f"{head}; {_IS[current]} orders are final.")
    if current is S.ON_HOLD and target is not S.CANCELLED:
        if held_from is None or OrderState(held_from) not in OPEN:
            raise InvalidTransition("This order is on hold and the step it was held at is not known; cancel it "
                                    "and request a new one.")
        if target != held_from:
            raise InvalidTransition(f"This order was put on hold while {_IS[OrderState(held_from)]}; it resumes "
                                    f"there, not at {STATE_LABELS[target].lower()}.")
        return
    if target in TRANSITIONS[current]:
        return
    if target in FORWARD and FORWARD.index(target) > FORWARD.index(current):
        missing = [_BE[s] for s in FORWARD[FORWARD.index(current) + 1:FORWARD.index(target)]]
        raise InvalidTransition(f"{head}; it must be {_and(missing)} first.")
    if target is S.COMPOUNDING:
        raise InvalidTransition(f"{head}; only a failed final check (a checked order) goes back to be re-made.")
    raise InvalidTransition(f"{head}; orders move forward only.")


def next_steps(state: OrderState, held_from: OrderState | None = None) -> list[OrderState]:
    """The buttons for an order: forward steps first (then a re-make), then hold, then cancel."""
    state = OrderState(state)
    if state is S.ON_HOLD:
        resume = [OrderState(held_from)] if held_from is not None and OrderState(held_from) in OPEN else []
        return [*resume, S.CANCELLED]
    allowed = TRANSITIONS[state]
    forward = [s for s in FORWARD if s in allowed and FORWARD.index(s) > FORWARD.index(state)]
    back = [s for s in FORWARD if s in allowed and FORWARD.index(s) < FORWARD.index(state)]
    return forward + back + [s for s in (S.ON_HOLD, S.CANCELLED) if s in allowed]


def permission_for(current: OrderState, target: OrderState) -> str:
    """The permission a move needs. Resuming a hold needs "hold_order" (whoever may hold may resume);
    sending a checked order back to be re-made is the checker's call, so it needs "check_order".
    """
    current, target = OrderState(current), OrderState(target)
    if current is S.ON_HOLD and target is not S.CANCELLED:
        return "hold_order"
    if current is S.CHECKED and target is S.COMPOUNDING:
        return "check_order"
    return PERMISSION_FOR[target]


# --------------------------------------------------------------------------------------------
# Quality checks and the compounding record (docs/domain.md "Compounding standards": "QC results such as
# capsule weight range and a 95–105% yield"; "who compounded, who checked")
# --------------------------------------------------------------------------------------------
YIELD_MIN = Decimal(95)
YIELD_MAX = Decimal(105)


def yield_percent(expected: Decimal, made: Decimal) -> Decimal:
    """Made as a percentage of expected, to one decimal place (half up, as a person rounds)."""
    if expected <= 0:
        raise ValidationFailed("The expected amount must be more than 0.", fields={"expected": "Must be more than 0."})
    if made < 0:
        raise ValidationFailed("The amount made cannot be negative.", fields={"quantity_made": "Cannot be negative."})
    return (made * 100 / expected).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def qc_passes(yield_pct: Decimal) -> bool:
    """docs/domain.md "Compounding standards": a 95–105% yield (inclusive) passes."""
    return YIELD_MIN <= yield_pct <= YIELD_MAX


def checker_must_differ(compounded_by_id: int | None, checked_by_id: int) -> None:
    """docs/domain.md "Compounding standards": the record names who compounded and who checked — two people,
    so the check is independent. (An order with no recorded compounder cannot clash.)
    """
    if compounded_by_id is not None and compounded_by_id == checked_by_id:
        raise Forbidden("The final check must be done by a pharmacist other than the one who compounded.")


class ReturnReason(StrEnum):
    """Why a dispensed fill is taken back (docs/domain.md "Returned fills")."""

    LOST = "lost_in_transit"
    DAMAGED = "damaged"
    WRONG_ADDRESS = "wrong_address"
    RETURNED_UNUSED = "returned_unused"
    DISPENSING_ERROR = "dispensing_error"


RETURN_REASON_LABELS: dict[ReturnReason, str] = {
    ReturnReason.LOST: "Lost in the post",
    ReturnReason.DAMAGED: "Arrived damaged or leaking",
    ReturnReason.WRONG_ADDRESS: "Delivered to the wrong address",
    ReturnReason.RETURNED_UNUSED: "Brought or sent back unused",
    ReturnReason.DISPENSING_ERROR: "Dispensed in error (wrong product, strength or patient)",
}


def return_refusal(state: OrderState, *, later_fill: int | None, rx_number: str) -> str | None:
    """Why this fill cannot be returned, or None. Only a dispensed fill, and only the latest of its prescription:
    a fill dispensed after it was counted on top of it, so taking an earlier one back would leave the later one's
    days stacked on medicine the patient never had — a pharmacist returns the later one first."""
    if OrderState(state) != S.DISPENSED:
        return f"Only a dispensed fill can be returned; this order is {_IS[OrderState(state)]}."
    if later_fill is not None:
        return (f"Only the latest fill of {rx_number} can be returned: order {later_fill} was dispensed after this "
                "one. Return that one first if it did not reach the patient either.")
    return None


def return_text(reason: ReturnReason, note: str | None) -> str:
    """The sentence the order keeps (and shows) about its return."""
    label = RETURN_REASON_LABELS[ReturnReason(reason)]
    return f"Returned after dispensing: {label}" + (f" — {note}" if note else "") + "."


def fill_label(authorized_fill: int, *, partial: bool = False) -> str:
    """"Original fill", "Refill 2", "Refill 2 (partial)": which authorized fill an order draws from."""
    text = "Original fill" if authorized_fill == 0 else f"Refill {authorized_fill}"
    return f"{text} (partial)" if partial else text


def lot_prefix_range(compounded_on: date) -> tuple[str, str]:
    """[low, high) bounds of every lot number of a day: an index range scan, unlike LIKE 'L261123%'."""
    prefix = f"L{compounded_on:%y%m%d}-"
    return prefix, prefix[:-1] + "."  # "." sorts right after "-"


def lot_number(compounded_on: date, sequence: int) -> str:
    """"L261123-007": the compounding date (YYMMDD) and the batch's number that day (at least 3 digits;
    a chain past 999 batches a day gets "L261123-1000")."""
    if isinstance(sequence, bool) or not 1 <= sequence <= 9999:
        raise ValueError(f"the daily batch sequence must be 1–9999, got {sequence!r}")
    return f"L{compounded_on:%y%m%d}-{sequence:03d}"


def batch_order_lot(batch_lot: str, place: int) -> str:
    """"L261123-007/2": the lot number on the label of the second order of batch L261123-007 — the batch's number on
    every label, and each container still told apart (a recall by the batch's number finds them all)."""
    if isinstance(place, bool) or not 1 <= place <= 999:
        raise ValueError(f"a batch's place must be 1–999, got {place!r}")
    return f"{batch_lot}/{place}"


def bag_code(rx_number: str, fill_number: int) -> str:
    """What the label's Code 128 barcode carries: the Rx number and the fill ("RX000005-00" is the original fill,
    "-01" the first refill). Unique per bag (a prescription has one order per fill number), short enough to type."""
    return f"{rx_number}-{fill_number:02d}"


def bag_matches(scanned: str, expected: str) -> bool:
    """A scan (or what was typed from under the barcode) names this bag: case, spaces and the dash do not matter."""

    def norm(text: str) -> str:
        return "".join(ch for ch in text.upper() if ch.isalnum())

    return bool(scanned) and norm(scanned) == norm(expected)


def bud_cap_note(category: UspCategory, compounded_on: date, bud: date | None,
                 lots: Sequence[tuple[str, str, date]]) -> str | None:
    """Why the BUD is earlier than the category's default, in words for the record: which lot's expiry capped it
    (`lots` are (ingredient, lot number, expiry)). None when the default applies."""
    if bud is None:
        return None
    default = compounded_on + timedelta(days=BUD_DAYS[UspCategory(category)])
    if bud >= default:
        return None
    cause = [f"{name} lot {number}" for name, number, expiry in lots if expiry == bud]
    what = " and ".join(cause) if cause else "an ingredient lot"
    return (f"Capped by the expiry of {what} ({bud:%b} {bud.day}, {bud.year}): the USP <795> default of "
            f"{BUD_DAYS[UspCategory(category)]} days would have been {default:%b} {default.day}, {default.year}.")


def recalled_lots_message(lots: list[str]) -> str:
    """Why a batch made from a recalled lot stops where it is, and the two ways on."""
    return (f"This batch was made from a recalled lot ({', '.join(lots)}, quarantined): it must not go out. Re-make it "
            "from good lots, or a pharmacist releases the lot from quarantine if the recall does not concern it.")


def check_refused_before_remake() -> str:
    """A batch that failed its check, or was sent back, is judged again only once it has been made again."""
    return ("This batch failed its check or was sent back: record the re-made batch first, then check it again.")
