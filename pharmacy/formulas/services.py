"""Master formulas created and changed under /formulas ("manage formulas"): each change is a new version that a
pharmacist other than its author approves before any order uses it; a retired formula cannot be ordered.

The formula row (compounding's `formulas` and `formula_ingredients`) always holds the approved version in use, so
compounding reads it as before; a pending version waits in `formula_versions` as a snapshot. Orders and batches
record the version number they were made with (compounding/services.py), and the snapshot of every version is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from pharmacy.compounding.models import Formula, FormulaIngredient
from pharmacy.compounding.rules import UspCategory, check_category_for_form
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.models import User
from pharmacy.core.roles import Permission
from pharmacy.extensions import db
from pharmacy.formulas import rules
from pharmacy.formulas.models import FormulaVersion
from pharmacy.formulas.rules import VersionStatus
from pharmacy.prescriptions.rules import Form


def snapshot(formula: Formula) -> dict[str, Any]:
    """The formula as a version records it: its fields and its ingredients (amounts as exact strings)."""
    out: dict[str, Any] = {key: getattr(formula, key) for key in rules.FIELDS}
    out["usp_category"] = UspCategory(formula.usp_category).value
    out["ingredients"] = [{"name": i.name, "amount": str(i.amount.normalize()), "unit": i.unit, "per": i.per,
                           "salt_form": i.salt_form, "active": bool(i.active_ingredient)} for i in formula.ingredients]
    return out


def _load(formula_id: int, *, lock: bool = False) -> Formula:
    stmt = sa.select(Formula).where(Formula.id == formula_id).options(selectinload(Formula.ingredients))
    if lock:
        stmt = stmt.with_for_update(of=Formula)
    formula = db.session.execute(stmt).scalar_one_or_none() if valid_id(formula_id) else None
    if formula is None:
        raise NotFound("No such formula.")
    return formula


def _text(data: dict[str, Any], key: str, *, required: bool, limit: int, errors: dict[str, str]) -> str | None:
    value = str(data.get(key) or "").strip() or None
    if required and not value:
        errors[key] = f"Enter the {rules.FIELDS.get(key, key).lower()}."
    elif value and len(value) > limit:
        errors[key] = f"At most {limit} characters."
    return value


def _fields(data: dict[str, Any], form: Form, errors: dict[str, str]) -> dict[str, Any]:
    """The version's fields from the form, checked (all errors at once)."""
    out: dict[str, Any] = {
        "name": _text(data, "name", required=True, limit=120, errors=errors),
        "storage": _text(data, "storage", required=True, limit=120, errors=errors),
        "container": _text(data, "container", required=True, limit=120, errors=errors),
        "method": _text(data, "method", required=True, limit=4000, errors=errors),
        "equipment": _text(data, "equipment", required=False, limit=240, errors=errors),
        "calculations": _text(data, "calculations", required=False, limit=4000, errors=errors),
        "quality_checks": _text(data, "quality_checks", required=False, limit=4000, errors=errors),
        "bud_reference": _text(data, "bud_reference", required=False, limit=200, errors=errors)
        or "USP <795> (2023) default BUD",
    }
    try:
        out["usp_category"] = UspCategory(data.get("usp_category")).value
        check_category_for_form(form, UspCategory(out["usp_category"]))
    except ValueError:
        errors["usp_category"] = "Choose the USP <795> category."
    except ValidationFailed as exc:
        errors["usp_category"] = " ".join(exc.fields.get("usp_category", [exc.message]))
    lead = data.get("lead_time_business_days")
    try:
        out["lead_time_business_days"] = int(str(lead).strip())
        if not 0 <= out["lead_time_business_days"] <= 30:
            raise ValueError
    except (TypeError, ValueError):
        errors["lead_time_business_days"] = "A whole number of business days, 0–30."
    try:
        out["ingredients"] = rules.clean_ingredients(data.get("ingredients") or [])
    except ValidationFailed as exc:
        errors.update({k: " ".join(v) for k, v in exc.fields.items()})
    return out


def _apply(formula: Formula, snap: dict[str, Any]) -> None:
    for key in rules.FIELDS:
        setattr(formula, key, UspCategory(snap[key]) if key == "usp_category" else snap[key])
    formula.ingredients.clear()
    db.session.flush()
    formula.ingredients = [
        FormulaIngredient(position=i, name=r["name"], salt_form=r.get("salt_form"), amount=Decimal(r["amount"]),
                          unit=r["unit"], per=r["per"], active_ingredient=bool(r.get("active")))
        for i, r in enumerate(snap["ingredients"])
    ]


def _note(note: str | None, *, required: bool = True) -> str:
    text = (note or "").strip()
    if required and len(text) < 3:
        raise ValidationFailed("Say what changed and why.", fields={"change_note": "Say what changed and why."})
    if len(text) > 400:
        raise ValidationFailed("The note is too long.", fields={"change_note": "At most 400 characters."})
    return text


def may_manage(actor: Actor) -> None:
    """Forbidden (and audited) unless the actor may manage formulas: asked before a form is shown."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="manage formulas")


def create_formula(actor: Actor, data: dict[str, Any]) -> FormulaVersion:
    """A new formula (a new strength, form or base): written as version 1, waiting for another pharmacist's approval
    — until then it cannot be prescribed or ordered."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="create formulas")
    errors: dict[str, str] = {}
    code = str(data.get("code") or "").strip().upper()
    if not code or len(code) > 32 or not all(c.isalnum() or c in "-._" for c in code):
        errors["code"] = "A short code of letters, digits, dots and dashes (e.g. LDN-CAP-2.5)."
    elif db.session.execute(sa.select(Formula.id).where(Formula.code == code)).first():
        errors["code"] = f"{code} is already a formula's code."
    try:
        form = Form(data.get("form"))
    except ValueError:
        errors["form"] = "Choose the form."
        form = Form.CAPSULE
    try:
        strength = Decimal(str(data.get("strength_mg")).strip())
        if not strength.is_finite() or not Decimal("0.001") <= strength <= Decimal(100):
            raise ArithmeticError
    except (ArithmeticError, ValueError):
        errors["strength_mg"] = "The strength in mg (per capsule, or per mL), e.g. 2.5."
        strength = Decimal(1)
    snap = _fields(data, form, errors)
    if errors:
        raise ValidationFailed("The formula was not saved.", fields=errors)
    note = _note(data.get("change_note"), required=False) or "New formula"
    t = now()
    formula = Formula(code=code, name=snap["name"], form=form, strength_mg=strength,
                      usp_category=UspCategory(snap["usp_category"]), storage=snap["storage"],
                      container=snap["container"], method=snap["method"], active=False, version=1, created_at=t)
    _apply(formula, snap)
    db.session.add(formula)
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict(f"{code} was created at the same moment by someone else.") from None
    version = FormulaVersion(formula_id=formula.id, version=1, status=VersionStatus.PENDING, snapshot=snap,
                             change_note=note, created_by_id=actor.user_id, created_at=t)
    db.session.add(version)
    db.session.flush()
    audit.record(actor, "formula.create", entity=("formula", formula.id), details={"code": code})
    return version


def _versions(formula_id: int) -> list[FormulaVersion]:
    return list(db.session.execute(sa.select(FormulaVersion).where(FormulaVersion.formula_id == formula_id)
                                   .order_by(FormulaVersion.version.desc())).scalars())


def propose_change(actor: Actor, formula_id: int, data: dict[str, Any]) -> FormulaVersion:
    """A change to a formula, as its next version, pending approval; the formula in use does not change until then.
    Form and strength are not changed here: a new strength is a new formula."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="change formulas")
    formula = _load(formula_id, lock=True)
    if formula.retired_at is not None:
        raise Conflict(f"{formula.name} was retired; it is not changed any more.")
    errors: dict[str, str] = {}
    snap = _fields(data, Form(formula.form), errors)
    if errors:
        raise ValidationFailed("The change was not saved.", fields=errors)
    current = snapshot(formula)
    changed = rules.changes(current, snap)
    if not changed:
        raise ValidationFailed("Nothing was changed.", fields={"change_note": "Nothing differs from the version in use."})
    note = _note(data.get("change_note"))
    versions = _versions(formula.id)
    if any(v.status == VersionStatus.PENDING for v in versions):
        raise Conflict("A change to this formula is already waiting for approval: approve or reject it first.")
    t = now()
    if not any(v.version == formula.version for v in versions):
        # The version in use before versioning began is kept as it was, so orders made with it can be traced.
        db.session.add(FormulaVersion(formula_id=formula.id, version=formula.version, status=VersionStatus.APPROVED,
                                      snapshot=current, change_note="On file before versions were kept",
                                      created_at=formula.created_at or t, decided_at=formula.created_at or t))
    number = max([formula.version, *(v.version for v in versions)]) + 1
    version = FormulaVersion(formula_id=formula.id, version=number, status=VersionStatus.PENDING, snapshot=snap,
                             change_note=note, created_by_id=actor.user_id, created_at=t)
    db.session.add(version)
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict("A change to this formula was saved at the same moment by someone else.") from None
    audit.record(actor, "formula.change", entity=("formula", formula.id),
                 details={"version": number, "changes": len(changed)})
    return version


def _pending(version_id: int) -> tuple[FormulaVersion, Formula]:
    version = db.session.execute(sa.select(FormulaVersion).where(FormulaVersion.id == version_id).with_for_update()
                                 ).scalar_one_or_none() if valid_id(version_id) else None
    if version is None:
        raise NotFound("No such formula version.")
    if version.status != VersionStatus.PENDING:
        raise Conflict(f"Version {version.version} was already {version.status.value}.")
    return version, _load(version.formula_id, lock=True)


def approve(actor: Actor, version_id: int, note: str | None = None) -> FormulaVersion:
    """A pharmacist other than the author approves: the version becomes the one in use (a new formula becomes
    orderable); orders already made keep theirs."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="approve formula versions")
    version, formula = _pending(version_id)
    try:
        rules.approver_must_differ(version.created_by_id, actor.user_id)
    except Forbidden:
        audit.record(actor, "denied.approve_own_formula", entity=("formula", formula.id), outcome="denied",
                     survive_rollback=True)
        raise
    _apply(formula, version.snapshot)
    formula.version = version.version
    if formula.retired_at is None:
        formula.active = True
    version.status = VersionStatus.APPROVED
    version.decided_by_id, version.decided_at = actor.user_id, now()
    version.decision_note = (note or "").strip()[:400] or None
    db.session.flush()
    audit.record(actor, "formula.approve", entity=("formula", formula.id), details={"version": version.version})
    return version


def reject(actor: Actor, version_id: int, note: str | None) -> FormulaVersion:
    """A pending version is turned down (with a reason); the version in use stays."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="reject formula versions")
    version, formula = _pending(version_id)
    text = (note or "").strip()
    if len(text) < 3:
        raise ValidationFailed("Say why.", fields={"decision_note": "Say why it is rejected."})
    version.status = VersionStatus.REJECTED
    version.decided_by_id, version.decided_at, version.decision_note = actor.user_id, now(), text[:400]
    db.session.flush()
    audit.record(actor, "formula.reject", entity=("formula", formula.id), details={"version": version.version})
    return version


def retire(actor: Actor, formula_id: int, reason: str) -> Formula:
    """A retired formula cannot be ordered (prescribing and starting a fill refuse it); orders already made keep
    it, and a change waiting for approval is rejected with it."""
    audit.require(actor, Permission.MANAGE_FORMULAS, what="retire formulas")
    formula = _load(formula_id, lock=True)
    text = (reason or "").strip()
    if not 3 <= len(text) <= 400:
        raise ValidationFailed("Say why it is retired.", fields={"reason": "Say why (3–400 characters)."})
    if formula.retired_at is not None:
        raise Conflict(f"{formula.name} is already retired.")
    t = now()
    formula.active = False
    formula.retired_at = t
    for v in _versions(formula.id):
        if v.status == VersionStatus.PENDING:
            v.status, v.decided_by_id, v.decided_at = VersionStatus.REJECTED, actor.user_id, t
            v.decision_note = "Formula retired"
    db.session.flush()
    audit.record(actor, "formula.retire", entity=("formula", formula.id), details={"reason": text})
    return formula


@dataclass
class VersionRow:
    version: FormulaVersion
    changes: list[str]


@dataclass
class FormulaHistory:
    formula: Formula
    versions: list[VersionRow]
    staff_names: dict[int, str]

    def name(self, user_id: int | None) -> str:
        return self.staff_names.get(user_id or 0, "—") if user_id else "—"

    @property
    def pending(self) -> FormulaVersion | None:
        return next((r.version for r in self.versions if r.version.status == VersionStatus.PENDING), None)


def history(actor: Actor, formula_id: int) -> FormulaHistory:
    """Every version of a formula, newest first, each with what it changed from the one before it."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see formulas")
    formula = _load(formula_id)
    versions = _versions(formula.id)
    rows = []
    previous: dict[str, Any] | None = None
    for v in sorted(versions, key=lambda v: v.version):  # each against the approved version before it
        rows.append(VersionRow(v, rules.changes(previous, v.snapshot) if previous is not None else []))
        if v.status == VersionStatus.APPROVED:
            previous = v.snapshot
    ids = {i for v in versions for i in (v.created_by_id, v.decided_by_id) if i}
    names = dict(db.session.execute(sa.select(User.id, User.full_name).where(User.id.in_(ids))).all()) if ids else {}
    return FormulaHistory(formula=formula, versions=list(reversed(rows)), staff_names=names)


def pending_versions(actor: Actor) -> list[tuple[FormulaVersion, Formula]]:
    """Changes waiting for a pharmacist's approval (for the formulas list and Today)."""
    if not actor.can(Permission.VIEW_CLINICAL):
        return []
    return [tuple(row) for row in db.session.execute(  # type: ignore[misc]
        sa.select(FormulaVersion, Formula).join(Formula, Formula.id == FormulaVersion.formula_id)
        .where(FormulaVersion.status == VersionStatus.PENDING).order_by(FormulaVersion.created_at)
    ).all()]


def form_values_of(formula: Formula) -> dict[str, Any]:
    """A formula's current values as the change form shows them (blank where the record has nothing)."""
    values = {k: ("" if v is None else v) for k, v in snapshot(formula).items()}
    return {**values, "code": formula.code, "form": Form(formula.form).value,
            "strength_mg": str(formula.strength_mg.normalize())}
