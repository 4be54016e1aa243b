"""Formula version rules (pure): what a version holds, what may change in one, and who may approve it.

docs/domain.md "Inventory, production and batches" → formula versions: a master formulation record (USP <795>) is
changed only by writing a new version, which a pharmacist other than its author approves before any batch uses it;
orders and batches keep the version they were made with; a retired formula cannot be ordered. The form and the
strength are a formula's identity (prescriptions name them): a new strength or form is a new formula.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from pharmacy.core.errors import Forbidden, ValidationFailed
from pharmacy.core.numbers import digits_only

# What a version records of the formula (besides its ingredients), and their labels for the change list.
FIELDS: dict[str, str] = {
    "name": "Name", "usp_category": "USP <795> category", "storage": "Storage", "container": "Container",
    "method": "Method", "equipment": "Equipment", "calculations": "Calculations", "quality_checks": "Quality checks",
    "bud_reference": "BUD reference", "lead_time_business_days": "Lead time (business days)",
}
IDENTITY = ("code", "form", "strength_mg")
INGREDIENT_UNITS = ("mg", "g", "mL", "each")
MAX_INGREDIENTS = 12


class VersionStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def approver_must_differ(author_id: int | None, approver_id: int | None) -> None:
    """Our decision: the author of a change cannot approve it (two pharmacists, as for the final check): one
    wrong amount in a master formula reaches every patient made from it."""
    if author_id is not None and author_id == approver_id:
        raise Forbidden("A change to a formula is approved by a pharmacist other than the one who wrote it.")


def _amount(value: Any) -> Decimal | None:
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and 0 < d <= 1_000_000 else None


def clean_ingredients(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ingredient lines of a version, checked: a name, an amount per batch size, a unit; exactly one active
    ingredient (naltrexone, with its salt form). Blank lines are dropped. Amounts are kept as strings (exact)."""
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    for i, row in enumerate(rows, start=1):
        name = str(row.get("name") or "").strip()
        if not name and not str(row.get("amount") or "").strip():
            continue
        amount = _amount(row.get("amount"))
        unit = str(row.get("unit") or "").strip()
        per = str(row.get("per") or "").strip()
        if not name or len(name) > 120:
            errors.append(f"Line {i}: the ingredient's name (up to 120 characters).")
        if amount is None:
            errors.append(f"Line {i}: an amount more than 0.")
        if unit not in INGREDIENT_UNITS:
            errors.append(f"Line {i}: the unit, one of {', '.join(INGREDIENT_UNITS)}.")
        if not per or len(per) > 40 or not digits_only(per[:1]):
            errors.append(f"Line {i}: the batch size the amount is for, e.g. \"100 capsules\" or \"100 mL\".")
        out.append({"name": name, "amount": str(amount) if amount is not None else "", "unit": unit, "per": per,
                    "salt_form": (str(row.get("salt_form") or "").strip() or None),
                    "active": bool(row.get("active"))})
    if not out:
        errors.append("List the ingredients.")
    elif sum(1 for r in out if r["active"]) != 1:
        errors.append("Mark exactly one ingredient as the active ingredient.")
    if len(out) > MAX_INGREDIENTS:
        errors.append(f"At most {MAX_INGREDIENTS} ingredients.")
    names = [r["name"].lower() for r in out]
    if len(set(names)) != len(names):
        errors.append("List each ingredient once.")
    if errors:
        raise ValidationFailed("The formula was not saved.", fields={"ingredients": " ".join(errors)})
    return out


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What a version changes, in words for the approving pharmacist ("Method", "Ingredients: …")."""
    out = [label for key, label in FIELDS.items() if str(before.get(key) or "") != str(after.get(key) or "")]
    old = {r["name"]: r for r in before.get("ingredients") or []}
    new = {r["name"]: r for r in after.get("ingredients") or []}
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"Ingredient added: {name}")
        elif name not in new:
            out.append(f"Ingredient removed: {name}")
        else:
            a, b = old[name], new[name]
            if (Decimal(a["amount"]), a["unit"], a["per"]) != (Decimal(b["amount"]), b["unit"], b["per"]):
                out.append(f"{name}: {a['amount']} {a['unit']} → {b['amount']} {b['unit']} per {b['per']}")
            elif (a.get("salt_form"), a.get("active")) != (b.get("salt_form"), b.get("active")):
                out.append(f"{name}: salt form or active ingredient")
    return out
