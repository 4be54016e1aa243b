"""Prescription rules (pure): forms and units, ISMP-safe dose text, dose checks, titration (the screening
table is in screening_rules.py).

Every rule cites the section of docs/domain.md it implements. Doses and volumes are
Decimal throughout: a float cannot say 0.1 mL exactly, and a label must never print 4.499999.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import pairwise

from pharmacy.core.errors import ValidationFailed
from pharmacy.core.npi import npi_is_valid
from pharmacy.core.numbers import digits_only


class Form(StrEnum):
    """docs/domain.md "Forms (all three are compounded)"."""

    CAPSULE = "capsule"
    SUBLINGUAL_LIQUID = "sublingual_liquid"
    TRANSDERMAL_CREAM = "transdermal_cream"


class RxStatus(StrEnum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    DISCONTINUED = "discontinued"
    REPLACED = "replaced"


class DosingTime(StrEnum):
    """docs/domain.md "Timing: usually at night … the prescriber may move it to the morning"."""

    BEDTIME = "bedtime"
    MORNING = "morning"


class Severity(StrEnum):
    """How an alert blocks: a hard stop, a stop a pharmacist may override, an ack, or a warning."""

    HARD_STOP = "hard_stop"
    OVERRIDABLE_STOP = "overridable_stop"
    ACKNOWLEDGE = "acknowledge"
    WARNING = "warning"


class DoseError(ValidationFailed):
    """A dose, strength or titration step that cannot be measured or given as written."""

    code = "dose_invalid"


class SupplyError(ValidationFailed):
    """A quantity or days supply that is out of range or does not match the dose."""

    code = "supply_invalid"


# --------------------------------------------------------------------------------------------
# Constants (docs/domain.md "Dosing", "Forms")
# --------------------------------------------------------------------------------------------
USUAL_MIN_MG = Decimal("1.5")  # docs/domain.md "Dosing": common MS range 1.5–4.5 mg once daily
USUAL_MAX_MG = Decimal("4.5")
LOW_DOSE_MAX_MG = Decimal("5")  # docs/domain.md "Dosing": > 5 mg is not LDN and needs a pharmacist's attention
# Our decision: some MS prescribers go up to 6 mg, so 5–6 mg is a stop a pharmacist may override (after checking with
# the prescriber); above 6 mg it is not LDN at all (a 50 mg order entered as LDN): a hard stop.
PHARMACIST_MAX_MG = Decimal("6")
ADULT_AGE = 18  # naltrexone's safety under 18 is not established: a warning
SPASTICITY_MAX_MG = Decimal("3")  # docs/domain.md "Dosing": spasticity cap 3 mg
MAX_CAPSULES_PER_DOSE = 6  # more than this means the wrong capsule strength was chosen
ML_STEP = Decimal("0.1")  # an oral syringe / cream applicator measures to 0.1 mL
MIN_ML_PER_DOSE = Decimal("0.1")
MAX_ML_PER_DOSE = Decimal("20")
MAX_TITRATION_STEPS = 12
MAX_DAYS_SUPPLY = 366  # matches the prescriptions.days_supply check constraint
# docs/domain.md "Label safety (ISMP)": every LDN label carries this.
OPIOID_LABEL_WARNING = "Do not take with opioid pain medicines."

_ROUTE = {  # (verb, where) — docs/domain.md "Forms": capsules by mouth, liquid under the tongue, cream on the skin
    Form.CAPSULE: ("Take", "by mouth"),
    Form.SUBLINGUAL_LIQUID: ("Place", "under the tongue"),
    Form.TRANSDERMAL_CREAM: ("Apply", "to the skin of the inner wrist or forearm"),
}
_PRODUCT_SUFFIX = {
    Form.CAPSULE: "capsules",
    Form.SUBLINGUAL_LIQUID: "sublingual liquid",
    Form.TRANSDERMAL_CREAM: "transdermal cream",
}
_TIMING_TEXT = {DosingTime.BEDTIME: "at bedtime", DosingTime.MORNING: "in the morning"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def to_decimal(value: object, field: str) -> Decimal:
    """Coerce int/str/Decimal to a finite Decimal; refuse floats (docs/domain.md "Money": exact amounts)."""
    if isinstance(value, bool | float):
        raise TypeError(f"{field} must be a Decimal, int or str, not {type(value).__name__}")
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValidationFailed(f"{value!r} is not a number.", fields={field: "Enter a number."}) from None
    if not d.is_finite():
        raise ValidationFailed(f"{value!r} is not a number.", fields={field: "Enter a number."})
    return d


def _canon(d: Decimal) -> Decimal:
    """Fewest digits without an exponent: Decimal("45.0") -> 45, Decimal("1.50") -> 1.5 (never 1E+1)."""
    n = d.normalize()
    return n.quantize(Decimal(1)) if n.as_tuple().exponent > 0 else n


# --------------------------------------------------------------------------------------------
# ISMP-safe text (docs/domain.md "Label safety (ISMP)")
# --------------------------------------------------------------------------------------------
def format_amount(value: Decimal | int | str) -> str:
    """docs/domain.md "Label safety (ISMP)": no trailing zero ("3" not "3.0"), always a leading zero ("0.5").

    A trailing zero is misread as ten times the dose ("3.0" -> "30"); a naked ".5" as 5.
    """
    d = to_decimal(value, "value")
    if d.is_zero():
        return "0"
    text = format(d.normalize(), "f")  # "f" never uses an exponent and always writes "0." before a fraction
    return text


def format_mg(value: Decimal | int | str) -> str:
    """"4.5 mg", with a space between number and unit (docs/domain.md "Label safety (ISMP)")."""
    return f"{format_amount(value)} mg"


def format_ml(value: Decimal | int | str) -> str:
    """"1.5 mL" — never "cc", which is misread as "u" or "00" (docs/domain.md "Label safety (ISMP)")."""
    return f"{format_amount(value)} mL"


def dose_unit(form: Form) -> str:
    """docs/domain.md "Forms": capsules are counted; liquid and cream are measured in mL."""
    return "capsule" if Form(form) is Form.CAPSULE else "mL"


def quantity_text(form: Form, quantity: Decimal | int | str) -> str:
    """"30 capsules", "1 capsule", "45 mL" — the amount in the patient's words."""
    q = to_decimal(quantity, "quantity")
    if Form(form) is Form.CAPSULE:
        return f"{format_amount(q)} {'capsule' if q == 1 else 'capsules'}"
    return format_ml(q)


def strength_text(form: Form, strength_mg: Decimal | int | str) -> str:
    """"4.5 mg" per capsule, "1 mg/mL" for liquid and cream (docs/domain.md "Forms")."""
    if Form(form) is Form.CAPSULE:
        return format_mg(strength_mg)
    return f"{format_amount(strength_mg)} mg/mL"


def product_name(form: Form, strength_mg: Decimal | int | str) -> str:
    """"Naltrexone 4.5 mg capsules" / "Naltrexone 1 mg/mL sublingual liquid": what the label calls it."""
    form = Form(form)
    return f"Naltrexone {strength_text(form, strength_mg)} {_PRODUCT_SUFFIX[form]}"


# --------------------------------------------------------------------------------------------
# Units per dose (docs/domain.md "Forms")
# --------------------------------------------------------------------------------------------
def units_per_dose(form: Form, strength_mg: Decimal | int | str, dose_mg: Decimal | int | str) -> Decimal:
    """Capsules or mL for one dose. docs/domain.md "Forms": capsules are whole units of a fixed strength;
    liquid and cream are measured by volume, so the volume must be one a patient can measure (0.1 mL).
    """
    form = Form(form)
    strength = to_decimal(strength_mg, "strength_mg")
    dose = to_decimal(dose_mg, "dose_mg")
    if strength <= 0:
        raise DoseError("The strength must be more than 0 mg.", fields={"strength_mg": "Must be more than 0."})
    if dose <= 0:
        raise DoseError("The dose must be more than 0 mg.", fields={"dose_mg": "Must be more than 0 mg."})
    units = dose / strength
    if form is Form.CAPSULE:
        if units != units.to_integral_value():
            msg = f"{format_mg(dose)} is not a whole number of {format_mg(strength)} capsules."
            raise DoseError(msg, fields={"dose_mg": msg})
        if units > MAX_CAPSULES_PER_DOSE:
            msg = (f"{format_mg(dose)} would be {format_amount(units)} capsules of {format_mg(strength)} a dose; "
                   f"use a stronger capsule (at most {MAX_CAPSULES_PER_DOSE} capsules a dose).")
            raise DoseError(msg, fields={"dose_mg": msg})
        return units.quantize(Decimal(1))
    conc = strength_text(form, strength)
    if units % ML_STEP != 0:
        msg = (f"{format_mg(dose)} at {conc} is {format_amount(units.quantize(Decimal('0.001')))} mL, "
               f"which cannot be measured; doses must come to a whole 0.1 mL.")
        raise DoseError(msg, fields={"dose_mg": msg})
    if not MIN_ML_PER_DOSE <= units <= MAX_ML_PER_DOSE:
        msg = (f"{format_mg(dose)} at {conc} is {format_ml(units)} a dose; a dose must be between "
               f"{format_ml(MIN_ML_PER_DOSE)} and {format_ml(MAX_ML_PER_DOSE)}. Choose another concentration.")
        raise DoseError(msg, fields={"dose_mg": msg})
    return _canon(units)


# --------------------------------------------------------------------------------------------
# Alerts and dose checks (docs/domain.md "Dosing", "Safety screening")
# --------------------------------------------------------------------------------------------
# Most serious first: how every list of alerts is ordered (pages, queries, the order's checks).
SEVERITY_RANK: dict[Severity, int] = {
    Severity.HARD_STOP: 0, Severity.OVERRIDABLE_STOP: 1, Severity.ACKNOWLEDGE: 2, Severity.WARNING: 3,
}


@dataclass(frozen=True)
class Alert:
    """One screening finding. `code` is stable (the service matches findings across screenings by it)."""

    code: str
    severity: Severity
    message: str

    @property
    def needs_pharmacist(self) -> bool:
        """A pharmacist must act (override with a reason, or acknowledge): docs/domain.md "Safety screening"."""
        return self.severity in (Severity.OVERRIDABLE_STOP, Severity.ACKNOWLEDGE)

    @property
    def blocks(self) -> bool:
        """Blocks the fill until resolved (a hard stop forever); a warning never blocks."""
        return self.severity is not Severity.WARNING


def can_override(severity: Severity) -> bool:
    """docs/domain.md "Safety screening": the overridable stops (liver, naltrexone allergy, 5–6 mg) and the
    spasticity ack are a pharmacist's call.

    A hard stop (opioids, > 6 mg) cannot be overridden: the fix is a changed prescription or
    medication list. A warning needs no override.
    """
    return Severity(severity) in (Severity.OVERRIDABLE_STOP, Severity.ACKNOWLEDGE)


def blocking_alerts(alerts: Sequence[tuple[Alert, bool]]) -> list[Alert]:
    """The alerts (with their resolved flag) that still stop a fill. A hard stop blocks even when
    marked resolved — it cannot be overridden; overridable stops and acks block until resolved.
    """
    out = []
    for alert, resolved in alerts:
        if alert.severity is Severity.HARD_STOP or (can_override(alert.severity) and not resolved):
            out.append(alert)
    return out


def expiry_alert(expiry_date: date, days_supply: int, today: date) -> Alert | None:
    """A prescription that expires before the supply of a fill made today would end: accepted, with a warning,
    so the pharmacy asks the prescriber for a renewal early (docs/domain.md "Refill timing": weeks, not days)."""
    last_day = today + timedelta(days=days_supply - 1)
    if today <= expiry_date < last_day:
        return Alert("expires_before_supply_ends", Severity.WARNING,
                     f"This prescription expires on {format_date(expiry_date)}, before a fill made today would run "
                     f"out ({format_date(last_day)}): ask the prescriber for a renewal now.")
    return None


@dataclass(frozen=True)
class OtherPrescription:
    """Another current LDN prescription of the same patient, as the duplicate check names it."""

    rx_number: str
    product: str
    dose_mg: Decimal
    expired_on: date | None = None  # its expiry date when it has passed: still open, but it can no longer be filled


def duplicate_alert(dose_mg: Decimal, others: list[OtherPrescription]) -> Alert | None:
    """A second current LDN prescription beside an older one: two supplies, two sets of reminders, and a patient
    who may take both (docs/domain.md "Safety screening": therapeutic duplication).

    A stop a pharmacist overrides with a reason, because two can be meant (capsules by day and a cream, a second
    strength for a titration written apart); most often the new one is a renewal or a dose change that should
    replace the old one. Only the newer prescription carries it: the older one's fills go on until someone decides."""
    if not others:
        return None

    def ended(o: OtherPrescription) -> str:
        return f", expired {o.expired_on:%b} {o.expired_on.day}, {o.expired_on.year}" if o.expired_on else ""

    named = "; ".join(f"{o.rx_number} ({o.product}, {format_mg(o.dose_mg)}{ended(o)})" for o in others[:2])
    if len(others) > 2:  # the message is stored in 400 characters: the prescription page lists them all
        named += f" and {len(others) - 2} more"
    if all(o.expired_on is not None for o in others):
        # An expired one left open is nearly always what this one renews: replacing carries its supply on hand.
        return Alert("duplicate_ldn", Severity.OVERRIDABLE_STOP,
                     f"The patient's earlier LDN prescription has expired but is still open: {named}. This one is "
                     "most likely its renewal: mark this one as its replacement (on this prescription's page), which "
                     "carries the supply the patient still holds, or discontinue the old one; override only if the "
                     "prescriber wants both.")
    total = dose_mg + sum((o.dose_mg for o in others if o.expired_on is None), Decimal(0))
    return Alert("duplicate_ldn", Severity.OVERRIDABLE_STOP,
                 f"The patient already has a current LDN prescription: {named}. Taken together that is "
                 f"{format_mg(total)} a day. If this one renews or changes it, mark this one as its replacement (on this "
                 "prescription's page) or discontinue the old one; override only if the prescriber wants both.")


def age_alert(date_of_birth: date | None, today: date) -> Alert | None:
    """A patient under 18: naltrexone's safety and dosing in children are not established (a warning, so the
    pharmacist confirms the prescriber's intent; paediatric MS exists, so it does not block)."""
    if date_of_birth is None:
        return None
    age = today.year - date_of_birth.year - ((today.month, today.day) < (date_of_birth.month, date_of_birth.day))
    if age >= ADULT_AGE:
        return None
    return Alert("age_under_18", Severity.WARNING,
                 f"The patient is {max(age, 0)} years old: the safety of naltrexone under 18 is not established. "
                 "Confirm the dose with the prescriber.")


def check_dose(dose_mg: Decimal | int | str, *, has_spasticity: bool) -> list[Alert]:
    """docs/domain.md "Dosing": usual range 1.5–4.5 mg; > 5 mg is not LDN; spasticity at most 3 mg."""
    dose = to_decimal(dose_mg, "dose_mg")
    if dose <= 0:
        raise DoseError("The dose must be more than 0 mg.", fields={"dose_mg": "Must be more than 0 mg."})
    alerts = []
    mg = format_mg(dose)
    if dose > PHARMACIST_MAX_MG:
        # docs/domain.md "Dosing": anything above the low-dose range (> 5 mg) is not LDN.
        alerts.append(Alert("dose_not_low_dose", Severity.HARD_STOP,
                            f"{mg} is above the low-dose range (at most 5 mg, 6 mg at most with a pharmacist's "
                            "review): this is not LDN. Contact the prescriber for a corrected prescription."))
    elif dose > LOW_DOSE_MAX_MG:
        # docs/domain.md "Dosing": > 5 mg "needs a pharmacist's attention"; some MS prescribers use up to 6 mg.
        alerts.append(Alert("dose_not_low_dose", Severity.OVERRIDABLE_STOP,
                            f"{mg} is above the low-dose range (at most 5 mg). A pharmacist must confirm it with the "
                            "prescriber and record a reason before filling."))
    elif not USUAL_MIN_MG <= dose <= USUAL_MAX_MG:
        alerts.append(Alert("dose_outside_usual_range", Severity.WARNING,
                            f"{mg} is outside the usual MS range of 1.5–4.5 mg once daily; "
                            "check it is what the prescriber intended."))
    if has_spasticity and dose > SPASTICITY_MAX_MG:
        # docs/domain.md "Dosing": spasticity cap 3 mg (LDN may add muscle stiffness).
        alerts.append(Alert("spasticity_dose", Severity.ACKNOWLEDGE,
                            f"The patient has spasticity and the dose is {mg}: no more than 3 mg daily is "
                            "advised, because LDN may add muscle stiffness. A pharmacist must acknowledge this."))
    return alerts


# --------------------------------------------------------------------------------------------
# Titration and supply (docs/domain.md "Dosing": "a titration plan changes the daily dose, so it
# changes days of supply"; "Label safety": a titration plan comes with a dated chart)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TitrationStep:
    """One step of a plan: this daily dose for this many days (LDN is once daily)."""

    dose_mg: Decimal
    days: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "dose_mg", to_decimal(self.dose_mg, "titration"))
        if isinstance(self.days, bool) or not isinstance(self.days, int) or not 1 <= self.days <= MAX_DAYS_SUPPLY:
            msg = f"A titration step must last 1 to {MAX_DAYS_SUPPLY} days (got {self.days!r})."
            raise DoseError(msg, fields={"titration": msg})
        if self.dose_mg <= 0:
            msg = "A titration step dose must be more than 0 mg."
            raise DoseError(msg, fields={"titration": msg})

    def to_json(self) -> dict[str, object]:
        """The shape stored on Prescription.titration: {"dose_mg": "1.5", "days": 14}."""
        return {"dose_mg": format_amount(self.dose_mg), "days": self.days}


def parse_titration(data: Sequence[dict[str, object]] | None) -> tuple[TitrationStep, ...]:
    """Prescription.titration JSON -> steps (None or [] is a fixed dose)."""
    steps = []
    for i, item in enumerate(data or (), start=1):
        try:
            dose = item["dose_mg"]  # a JSON number arrives as float: its repr ("1.5") is what was meant
            steps.append(TitrationStep(to_decimal(str(dose) if isinstance(dose, float) else dose, "titration"),
                                       item["days"]))
        except (KeyError, TypeError):
            msg = f"Titration step {i} needs a dose in mg and a whole number of days."
            raise DoseError(msg, fields={"titration": msg}) from None
    return tuple(steps)


@dataclass(frozen=True)
class ScheduledStep:
    """A dated row of the chart; `end` is inclusive, None for the open-ended maintenance dose."""

    start: date
    end: date | None
    dose_mg: Decimal
    units_per_day: Decimal


def _plan(form: Form, strength_mg: object, dose_mg: object,
          steps: Sequence[TitrationStep]) -> tuple[list[tuple[int, Decimal]], Decimal]:
    """(days, units a day) per step, and the maintenance units a day; every dose validated."""
    if len(steps) > MAX_TITRATION_STEPS:
        msg = f"A titration plan has at most {MAX_TITRATION_STEPS} steps (got {len(steps)})."
        raise DoseError(msg, fields={"titration": msg})
    out = []
    for i, step in enumerate(steps, start=1):
        try:
            out.append((step.days, units_per_dose(form, strength_mg, step.dose_mg)))
        except DoseError as exc:
            msg = f"Titration step {i}: {exc.message}"
            raise DoseError(msg, fields={"titration": msg}) from None
    return out, units_per_dose(form, strength_mg, dose_mg)


def titration_schedule(form: Form, strength_mg: Decimal, steps: Sequence[TitrationStep], start: date,
                       maintenance_dose_mg: Decimal) -> list[ScheduledStep]:
    """The dated chart: each step in order (a flare may step down), then the open-ended maintenance dose."""
    plan, maintenance_units = _plan(form, strength_mg, maintenance_dose_mg, steps)
    rows, day = [], start
    for step, (days, units) in zip(steps, plan, strict=True):
        rows.append(ScheduledStep(day, day + timedelta(days=days - 1), step.dose_mg, units))
        day += timedelta(days=days)
    rows.append(ScheduledStep(day, None, to_decimal(maintenance_dose_mg, "dose_mg"), maintenance_units))
    return rows


def remaining_steps(steps: Sequence[TitrationStep], days_elapsed: int) -> tuple[TitrationStep, ...]:
    """The part of a plan still ahead after `days_elapsed` days (for the next fill of a capped supply)."""
    out, left = [], max(days_elapsed, 0)
    for step in steps:
        if left >= step.days:
            left -= step.days
        else:
            out.append(TitrationStep(step.dose_mg, step.days - left))
            left = 0
    return tuple(out)


def quantity_for_days(form: Form, strength_mg: Decimal, dose_mg: Decimal, days_supply: int,
                      steps: Sequence[TitrationStep] = ()) -> Decimal:
    """Capsules or mL used in the first `days_supply` days: the titration steps, then the maintenance dose."""
    if days_supply < 0:
        raise SupplyError("Days supply cannot be negative.", fields={"days_supply": "Must be 0 or more."})
    plan, maintenance_units = _plan(form, strength_mg, dose_mg, steps)
    total, left = Decimal(0), days_supply
    for days, units in plan:
        take = min(days, left)
        total += take * units
        left -= take
    return _canon(total + left * maintenance_units)


def days_for_quantity(form: Form, strength_mg: Decimal, dose_mg: Decimal, quantity: Decimal,
                      steps: Sequence[TitrationStep] = ()) -> int:
    """Whole days a quantity lasts on the same walk (a partial day's dose does not count)."""
    left = to_decimal(quantity, "quantity")
    if left < 0:
        raise SupplyError("Quantity cannot be negative.", fields={"quantity": "Must be 0 or more."})
    plan, maintenance_units = _plan(form, strength_mg, dose_mg, steps)
    days = 0
    for step_days, units in plan:
        if step_days * units > left:
            return days + int(left // units)
        left -= step_days * units
        days += step_days
    return days + int(left // maintenance_units)


def resolve_quantity_and_days(form: Form, strength_mg: Decimal, dose_mg: Decimal, *, quantity: Decimal | None,
                              days_supply: int | None, steps: Sequence[TitrationStep] = ()) -> tuple[Decimal, int]:
    """Given one of quantity / days supply, compute the other; given both, they must agree.

    "Agree" means the quantity lasts exactly `days_supply` whole days, so a spare part-dose is
    accepted but a quantity one day short (or a day over) is not: the run-out date is computed
    from days supply (docs/domain.md "Refill timing"), so it must be true.
    """
    form = Form(form)
    if quantity is None and days_supply is None:
        raise SupplyError("Enter a quantity or a days supply.",
                          fields={"quantity": "Enter a quantity or a days supply.",
                                  "days_supply": "Enter a quantity or a days supply."})
    if days_supply is not None and (isinstance(days_supply, bool) or not 1 <= days_supply <= MAX_DAYS_SUPPLY):
        msg = f"Days supply must be 1 to {MAX_DAYS_SUPPLY} days."
        raise SupplyError(msg, fields={"days_supply": msg})
    per_day = "following the titration plan" if steps else (
        f"at {quantity_text(form, units_per_dose(form, strength_mg, dose_mg))} a day")
    if quantity is None:
        assert days_supply is not None
        return quantity_for_days(form, strength_mg, dose_mg, days_supply, steps), days_supply
    q = to_decimal(quantity, "quantity")
    if q <= 0:
        raise SupplyError("Quantity must be more than 0.", fields={"quantity": "Must be more than 0."})
    step = Decimal(1) if form is Form.CAPSULE else ML_STEP
    if q % step != 0:
        msg = ("Quantity must be a whole number of capsules." if form is Form.CAPSULE
               else "Quantity must be measured to 0.1 mL.")
        raise SupplyError(msg, fields={"quantity": msg})
    lasts = days_for_quantity(form, strength_mg, dose_mg, q, steps)
    if days_supply is None:
        if lasts < 1:
            msg = f"{quantity_text(form, q)} is less than one day's dose {per_day}."
            raise SupplyError(msg, fields={"quantity": msg})
        if lasts > MAX_DAYS_SUPPLY:
            msg = f"{quantity_text(form, q)} lasts {lasts} days {per_day}; at most {MAX_DAYS_SUPPLY} days."
            raise SupplyError(msg, fields={"quantity": msg})
        return q, lasts
    if lasts != days_supply:
        msg = f"{quantity_text(form, q)} last {lasts} days {per_day}, not {days_supply}."
        raise SupplyError(msg, fields={"quantity": msg, "days_supply": msg})
    return q, days_supply


# --------------------------------------------------------------------------------------------
# Directions and the dated chart (docs/domain.md "Label safety (ISMP)", "Dosing": timing)
# --------------------------------------------------------------------------------------------
def _amount_and_dose(form: Form, units: Decimal, dose: Decimal) -> str:
    return f"{quantity_text(form, units)} ({format_mg(dose)})"


def directions(form: Form, strength_mg: Decimal, dose_mg: Decimal, dosing_time: DosingTime,
               steps: Sequence[TitrationStep] = ()) -> str:
    """Plain-word directions: "Take 3 capsules (4.5 mg) by mouth at bedtime." Never HS/qhs or cc.

    With a titration plan the label points to the dated chart, since "week 3" is easy to miscount.
    """
    form = Form(form)
    verb, where = _ROUTE[form]
    when = _TIMING_TEXT[DosingTime(dosing_time)]
    plan, maintenance_units = _plan(form, strength_mg, dose_mg, steps)
    dose = to_decimal(dose_mg, "dose_mg")
    tail = {Form.CAPSULE: "", Form.SUBLINGUAL_LIQUID: " Hold for 1 minute, then swallow.",
            Form.TRANSDERMAL_CREAM: " Rub in well."}[form]
    if not steps:
        if form is Form.TRANSDERMAL_CREAM:
            return f"{verb} {_amount_and_dose(form, maintenance_units, dose)} {where} {when} and rub in well."
        return f"{verb} {_amount_and_dose(form, maintenance_units, dose)} {where} {when}.{tail}"
    first = _amount_and_dose(form, plan[0][1], steps[0].dose_mg)
    last = _amount_and_dose(form, maintenance_units, dose)
    seq = [*(s.dose_mg for s in steps), dose]
    pairs = list(pairwise(seq))
    if seq[0] < seq[-1] and all(a <= b for a, b in pairs):
        change = f"increasing as shown, up to {last}"
    elif seq[0] > seq[-1] and all(a >= b for a, b in pairs):
        change = f"decreasing as shown, to {last}"
    else:
        change = f"changing as shown, then {last}"
    return f"Follow the dated chart: {verb.lower()} {first} {where} {when}, {change}.{tail}"


def format_date(d: date) -> str:
    """"Dec 1, 2026": month names, not 12/1, so day and month cannot be swapped."""
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"


def _date_range(start: date, end: date | None) -> str:
    if end is None:
        return f"From {format_date(start)}"
    if start == end:
        return format_date(start)
    if start.year == end.year:
        return f"{_MONTHS[start.month - 1]} {start.day} – {format_date(end)}"
    return f"{format_date(start)} – {format_date(end)}"


def titration_chart_rows(schedule: Sequence[ScheduledStep], form: Form) -> list[tuple[str, str, str]]:
    """(dates, amount, dose) per row: ("Dec 1 – Dec 14, 2026", "1 capsule", "1.5 mg")."""
    return [(_date_range(s.start, s.end), quantity_text(form, s.units_per_day), format_mg(s.dose_mg))
            for s in schedule]


# --------------------------------------------------------------------------------------------
# Prescriber NPI (receipts carry the prescriber: docs/domain.md "The drug and why …")
# --------------------------------------------------------------------------------------------
def validate_npi(npi: str | None) -> str:
    """A valid NPI, stripped of surrounding spaces, or a ValidationFailed that says what is wrong."""
    value = (npi or "").strip()
    if len(value) != 10 or not digits_only(value):
        msg = f"An NPI is exactly 10 digits, starting with 1 or 2 (got {value!r})."
    elif value[0] not in "12":
        msg = "An NPI starts with 1 or 2."
    elif not npi_is_valid(value):
        msg = "This NPI's check digit (the last one) does not match the other nine: look for a typo."
    else:
        return value
    raise ValidationFailed(msg, fields={"npi": msg})
