"""Reading a written medication into the pharmacy's formulas (pure): which formula, which dose and timing, which
quantity and days — and, written down for the pharmacist, everything that did not map or could be read two ways.

Split from eprescribing/rules.py (the message, the patient and the prescriber): the medication is read the same
whether it came by NCPDP SCRIPT or FHIR. Nothing is guessed: a sig that could be read two ways (a titration, a count
that disagrees with the mg, a decimal comma before three digits) leaves the dose empty and says why.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from pharmacy.core.numbers import digits_only
from pharmacy.eprescribing.rules import WrittenMedication
from pharmacy.prescriptions.rules import DosingTime, Form, format_amount

#: NCI Thesaurus codes NCPDP uses for quantity units (QuantityUnitOfMeasure) and the forms they imply.
QUANTITY_UNITS = {"C48480": "capsule", "C28254": "mL"}
#: NCI Thesaurus codes of StrengthUnitOfMeasure that LDN is written in.
STRENGTH_UNITS = {"C28253": "mg", "C48152": "mcg", "C42576": "mg/mL"}
#: Words in a drug description or dose form, and the form they mean for LDN.
FORM_WORDS = (
    (Form.CAPSULE, ("capsule", "capsules", "cap", "caps")),
    (Form.SUBLINGUAL_LIQUID, ("sublingual", "liquid", "solution", "drops", "oral solution", "suspension")),
    (Form.TRANSDERMAL_CREAM, ("cream", "transdermal", "topical", "gel", "lotion")),
)
_STRENGTH = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(mg|mcg)\s*(?:/\s*(?:1\s*)?(ml|mL|ML))?", re.IGNORECASE)
# An amount in mg the sig states: "(4.5 mg)", or per unit ("1.5 mg each", "1.5 mg per capsule", "1.5 mg capsules").
# A concentration ("1 mg/mL") is the product's strength, not a dose.
_DOSE_MG = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*mg\b(?!\s*/)"
                      r"(\s*(?:each|apiece|per\s+(?:capsule|cap|ml|dose)|capsules?\b|caps?\b))?", re.IGNORECASE)
# A count of capsules of a strength: "Take one 4.5 mg capsule", "2 x 1.5 mg caps".
_COUNT_OF = re.compile(r"\b(\d+(?:\.\d+)?|one|two|three|four|five|six|half)\s+(?:x\s+|of\s+the\s+)?"
                       r"(?:\d+(?:\.\d+)?|\.\d+)\s*mg\s+(?:capsules?|caps?)\b", re.IGNORECASE)
# A comma between digits: "1,5" (a decimal comma) or "1,500" (a thousands separator — or a decimal comma).
_DIGIT_COMMA = re.compile(r"(?<![\d,.])(\d+),(\d+)(?![\d,.])")
_UNITS = re.compile(r"\b(take|place|apply|give|use)?\s*(\d+(?:\.\d+)?|\.\d+|one|two|three|four|five|six|half)\s*"
                    r"(capsules?|caps?|ml|milliliters?|millilitres?)\b", re.IGNORECASE)
_WORD_NUMBERS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "half": "0.5"}
_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9AB](\.?[0-9A-Z]{0,4})?$")
_BEDTIME = re.compile(r"\b(bedtime|at night|nightly|night|evening|hs|qhs)\b", re.IGNORECASE)
_MORNING = re.compile(r"\b(morning|in the am|every am|qam|each am)\b", re.IGNORECASE)
NALTREXONE = re.compile(r"\b(naltrexone|ldn)\b", re.IGNORECASE)


@dataclass(frozen=True)
class FormulaOption:
    id: int
    form: Form
    strength_mg: Decimal
    name: str


@dataclass
class MedicationMapping:
    """The written medication read as this pharmacy's terms. Every None is a field the pharmacist fills in."""

    formula_id: int | None = None
    form: Form | None = None
    strength_mg: Decimal | None = None
    dose_mg: Decimal | None = None
    dosing_time: DosingTime | None = None
    quantity: Decimal | None = None
    days_supply: int | None = None
    refills: int = 0
    written_date: date | None = None
    directions: str = ""
    indication_code: str = "G35"
    unmapped: list[str] = field(default_factory=list)


def _decimal(text: str | None) -> Decimal | None:
    try:
        d = Decimal((text or "").strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() and d > 0 else None


def _whole(text: str | None, lo: int, hi: int) -> int | None:
    value = (text or "").strip()
    if not digits_only(value) or len(value) > 6:
        return None
    number = int(value)
    return number if lo <= number <= hi else None


def form_of(text: str) -> Form | None:
    """The LDN form a description or dose form names (None when it names none, or more than one)."""
    lowered = f" {text.lower()} "
    found = {form for form, words in FORM_WORDS for w in words if re.search(rf"\b{re.escape(w)}\b", lowered)}
    return found.pop() if len(found) == 1 else None


def strength_of(text: str) -> tuple[Decimal, bool] | None:
    """The strength in a description ("4.5 mg" → (4.5, per unit), "1 mg/mL" → (1, per mL)); mcg is converted, a
    decimal comma read ("1,5 mg"); a number like "1,500" is not guessed at (None)."""
    text, unreadable = decimal_commas(text or "")
    if unreadable:
        return None
    m = _STRENGTH.search(text)
    if not m:
        return None
    value = _decimal(m.group(1))
    if value is None:
        return None
    if m.group(2).lower() == "mcg":
        value = value / 1000
    return value.normalize() if value == value.to_integral() else value, m.group(3) is not None


def decimal_commas(text: str) -> tuple[str, list[str]]:
    """The text with each decimal comma read as a point ("1,5 mg" → "1.5 mg"), and the numbers nobody can read.

    Many European-trained prescribers, and some EHRs' free-text sigs, write a decimal comma; read as text, "1,5 mg"
    would otherwise be taken as 5 mg. A comma followed by exactly three digits ("1,500") is either a thousands
    separator or a decimal comma: it is left as written and returned, so the caller leaves that field empty and
    says why rather than guess a thousandfold dose either way."""
    ambiguous: list[str] = []

    def point(m: re.Match[str]) -> str:
        if len(m.group(2)) == 3:
            ambiguous.append(m.group(0))
            return m.group(0)
        return f"{m.group(1)}.{m.group(2)}"

    return _DIGIT_COMMA.sub(point, text or ""), ambiguous


def quantity_number(text: str | None) -> Decimal | None:
    """A quantity as written: "30", "22.5", "22,5" (a decimal comma) or "1,000" (thousands: a quantity of capsules or
    mL is never a fraction with three decimals)."""
    value = (text or "").strip()
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", value, re.ASCII):
        return _decimal(value.replace(",", ""))
    if re.fullmatch(r"\d+,\d{1,2}", value, re.ASCII):
        return _decimal(value.replace(",", "."))
    return _decimal(value)


@dataclass(frozen=True)
class DoseReading:
    """The daily dose a sig states (None: left for the pharmacist) and why it was left or what to check."""

    dose_mg: Decimal | None
    notes: tuple[str, ...] = ()


def _amounts(values: Sequence[Decimal]) -> str:
    return ", ".join(f"{format_amount(v)} mg" for v in values)


def read_dose(sig: str, form: Form | None, strength_mg: Decimal | None) -> DoseReading:
    """The daily dose a sig states, read only when the sig says one thing.

    An explicit "(4.5 mg)", or units × strength ("Take 3 capsules" of 1.5 mg), or both when they agree. Left empty,
    with the reason, when the sig gives several doses (a titration: "1.5 mg for 14 days, then 3 mg"), when the units
    and the mg disagree ("1 capsule (4.5 mg)" of 1.5 mg capsules — the label would say one capsule), when a per-unit
    strength is not this product's, or when a number cannot be read ("1,500"). A per-unit strength that agrees
    ("2 capsules (1.5 mg each)" of 1.5 mg) is read as units × strength, and said, because the first mg in the sig is
    not the dose."""
    text, unreadable = decimal_commas(sig or "")
    if unreadable:
        return DoseReading(None, (f"The directions write “{unreadable[0]}” (a thousands separator or a decimal "
                                  "comma?): enter the dose and ask the prescriber.",))
    stated = [(_decimal(m.group(1)), bool(m.group(2))) for m in _DOSE_MG.finditer(text)]
    daily = sorted({v for v, per_unit in stated if v is not None and not per_unit})
    each = sorted({v for v, per_unit in stated if v is not None and per_unit})
    units: list[Decimal] = []
    if form is not None:
        for m in _UNITS.finditer(text):
            amount = _decimal(_WORD_NUMBERS.get(m.group(2).lower(), m.group(2)))
            if amount is not None and m.group(3).lower().startswith("cap") == (form == Form.CAPSULE):
                units.append(amount)
        if form == Form.CAPSULE:
            units.extend(a for m in _COUNT_OF.finditer(text)
                         if (a := _decimal(_WORD_NUMBERS.get(m.group(1).lower(), m.group(1)))) is not None)
    counts = sorted(set(units))
    if len(daily) > 1 or len(each) > 1 or len(counts) > 1:
        steps = _amounts(daily or each) if len(daily) > 1 or len(each) > 1 else ", ".join(map(format_amount, counts))
        return DoseReading(None, (f"The directions give more than one dose ({steps}): a titration? Enter its steps "
                                  "and the dose it ends on (the quantity and days supply too), or ask the "
                                  "prescriber.",))
    count = counts[0] if counts else None
    unit = "capsule" if form == Form.CAPSULE else "mL"
    if each:
        per = each[0]
        if strength_mg is not None and per != strength_mg:
            return DoseReading(None, (f"The directions give {format_amount(per)} mg per {unit}, but the product "
                                      f"written is {format_amount(strength_mg)} mg: ask the prescriber.",))
        if count is None:
            return DoseReading(None, (f"The directions give {format_amount(per)} mg per {unit} but not how many: "
                                      "enter the dose.",))
        dose = (count * per).normalize()
        if daily and daily[0] != dose:
            return DoseReading(None, (f"The directions say {format_amount(count)} × {format_amount(per)} mg and "
                                      f"{_amounts(daily)}: ask the prescriber.",))
        if count == 1:  # "Take one 4.5 mg capsule": the strength is the dose
            return DoseReading(dose)
        return DoseReading(dose, (f"The directions give the strength per {unit} ({format_amount(per)} mg each): the "
                                  f"daily dose is read as {format_amount(count)} × {format_amount(per)} mg = "
                                  f"{format_amount(dose)} mg — check it.",))
    by_units = (count * strength_mg).normalize() if count is not None and strength_mg is not None else None
    if daily:
        if by_units is not None and by_units != daily[0]:
            return DoseReading(None, (f"The directions say {format_amount(count)} {unit}"
                                      f"{'s' if unit == 'capsule' and count != 1 else ''} and {_amounts(daily)}, but "
                                      f"{format_amount(count)} × {format_amount(strength_mg)} mg is "
                                      f"{format_amount(by_units)} mg: ask the prescriber.",))
        return DoseReading(daily[0])
    return DoseReading(by_units)


def dose_from_sig(sig: str, form: Form | None, strength_mg: Decimal | None) -> Decimal | None:
    """The daily dose a sig states, or None when it states none or is not clear (see read_dose for why)."""
    return read_dose(sig, form, strength_mg).dose_mg


def timing_from_sig(sig: str) -> DosingTime | None:
    bedtime, morning = bool(_BEDTIME.search(sig or "")), bool(_MORNING.search(sig or ""))
    if bedtime == morning:
        return None
    return DosingTime.BEDTIME if bedtime else DosingTime.MORNING


def map_medication(med: WrittenMedication, formulas: Sequence[FormulaOption]) -> MedicationMapping:
    """Map what the prescriber wrote to a formula, a daily dose and a supply, noting each part that did not map.

    Mapping is by form and strength only (the pharmacy's formulas are LDN in three forms); drug codes (NDC, RxNorm)
    are shown but never used: a compounded product has none of its own. Nothing guessed silently: where the
    prescription is silent or unreadable the field stays empty and the reason is listed.
    """
    out = MedicationMapping()
    _map_product(out, med, formulas)
    _map_directions(out, med)
    _map_amounts(out, med)
    _map_paperwork(out, med)
    out.unmapped.extend(note for note in med.unread if note not in out.unmapped)
    return out


def _map_product(out: MedicationMapping, med: WrittenMedication, formulas: Sequence[FormulaOption]) -> None:
    """The drug, its form and strength, and the formula they name."""
    text = " ".join(x for x in (med.description, med.form_text) if x)
    if not NALTREXONE.search(med.description or ""):
        out.unmapped.append(f"“{med.description or 'no drug named'}” is not naltrexone: this pharmacy compounds LDN only.")
    out.form = form_of(text)
    if out.form is None:
        out.unmapped.append("The dose form (capsule, sublingual liquid or transdermal cream) could not be read.")
    coded = strength_of(f"{med.strength_value} {STRENGTH_UNITS.get(med.strength_unit.strip(), med.strength_unit)}"
                        ) if med.strength_value.strip() else None
    described = strength_of(med.description)
    if coded is not None and described is not None and coded[0] != described[0]:
        # Which one the prescriber meant is theirs to say: a formula picked from either would be a silent guess.
        out.unmapped.append(f"The coded strength ({format_amount(coded[0])} mg) and the description "
                            f"({format_amount(described[0])} mg) disagree: ask the prescriber.")
        return
    strength = coded or described
    if strength is not None:
        out.strength_mg = strength[0]
        if strength[1] and out.form == Form.CAPSULE:
            out.unmapped.append("A strength per mL was written for capsules.")
    else:
        out.unmapped.append("The strength could not be read.")
    if out.form is None or out.strength_mg is None:
        return
    chosen = [f for f in formulas if f.form == out.form and f.strength_mg == out.strength_mg]
    if chosen:
        out.formula_id = chosen[0].id
    else:
        unit = "mg" if out.form == Form.CAPSULE else "mg/mL"
        out.unmapped.append(f"No active formula is {format_amount(out.strength_mg)} {unit} "
                            f"{out.form.value.replace('_', ' ')}: choose the nearest and ask the prescriber.")


def _map_directions(out: MedicationMapping, med: WrittenMedication) -> None:
    """The daily dose and its time of day, from the sig (kept verbatim as the directions)."""
    reading = read_dose(med.sig, out.form, out.strength_mg)
    out.dose_mg = reading.dose_mg
    out.unmapped.extend(reading.notes)
    if out.dose_mg is None and not reading.notes:
        out.unmapped.append("The daily dose could not be read from the directions.")
    out.dosing_time = timing_from_sig(med.sig)
    if out.dosing_time is None:
        out.unmapped.append("The directions do not say bedtime or morning: bedtime is the usual.")
    out.directions = (med.sig or "").strip()[:1000]


def _map_amounts(out: MedicationMapping, med: WrittenMedication) -> None:
    """Quantity (in a unit that fits the form), days supply and refills (missing = none)."""
    unit = (QUANTITY_UNITS.get(med.quantity_unit.strip()) or med.quantity_unit.strip()).lower()
    qty = quantity_number(med.quantity)
    if qty is not None:
        fits = unit in ("capsule", "capsules") if out.form == Form.CAPSULE else unit in ("ml", "milliliter", "millilitre")
        if out.form is not None and fits:
            out.quantity = qty
        else:
            out.unmapped.append(f"The quantity unit “{med.quantity_unit or 'none'}” does not fit "
                                f"{out.form.value.replace('_', ' ') if out.form else 'the form'}.")
    elif med.quantity:
        out.unmapped.append("The quantity is not a number.")
    out.days_supply = _whole(med.days_supply, 1, 366)
    if med.days_supply and out.days_supply is None:
        out.unmapped.append("The days supply is not a whole number of days (1–366).")
    if med.refills:
        refills = _whole(med.refills, 0, 99)
        if refills is None:
            out.unmapped.append("The number of refills is not a whole number (0–99): none until the prescriber says.")
        out.refills = refills or 0


def _map_paperwork(out: MedicationMapping, med: WrittenMedication) -> None:
    """Written date, diagnosis and substitution."""
    out.written_date = med.written_date
    if out.written_date is None:
        out.unmapped.append("No written date.")
    codes = [c.strip().upper() for c in med.diagnoses if _ICD10.match(c.strip().upper())]
    if codes:
        out.indication_code = codes[0]
        if len(codes) > 1:
            out.unmapped.append(f"More than one diagnosis ({', '.join(codes)}): the first is kept.")
    else:
        out.unmapped.append("No ICD-10 diagnosis: G35 (multiple sclerosis) assumed.")
    if med.substitutions.strip() == "1":
        out.unmapped.append("Written as “dispense as written” (substitution not allowed): compounded as written.")


def intake_form_values(mapping: MedicationMapping) -> dict[str, str]:
    """The review form's starting values (strings, as an HTML form holds them)."""
    values = {
        "formula_id": str(mapping.formula_id or ""),
        "dose_mg": format_amount(mapping.dose_mg) if mapping.dose_mg is not None else "",
        "dosing_time": (mapping.dosing_time or DosingTime.BEDTIME).value,
        "quantity": format_amount(mapping.quantity) if mapping.quantity is not None else "",
        "days_supply": str(mapping.days_supply or ""),
        "refills_authorized": str(mapping.refills),
        "written_date": mapping.written_date.isoformat() if mapping.written_date else "",
        "directions": mapping.directions,
        "indication_code": mapping.indication_code,
        "indication": "Multiple sclerosis" if mapping.indication_code.startswith("G35") else "",
    }
    return values
