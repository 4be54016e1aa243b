"""Staff roles and what each may do: the permission matrix the README prints.

Enforced in services (`core.auth.require`), not only by hiding buttons. Admins run the
business (users, prices, audit, reports) but do not open clinical records: HIPAA's
"minimum necessary" — a pharmacist who also administers gets two accounts.
"""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    PHARMACIST = "pharmacist"
    TECHNICIAN = "technician"


class Permission(StrEnum):
    VIEW_CLINICAL = "view_clinical"  # patients, prescriptions, orders, refill requests
    EDIT_PATIENT = "edit_patient"  # intake of patients and prescribers, contact details, medications
    ENTER_PRESCRIPTION = "enter_prescription"  # intake of a new prescription
    MANAGE_PRESCRIPTION = "manage_prescription"  # hold, discontinue, replace
    OVERRIDE_ALERT = "override_alert"  # override a stop, acknowledge a warning
    VERIFY_ORDER = "verify_order"
    COMPOUND = "compound"
    CHECK_ORDER = "check_order"  # final check / release
    DISPENSE = "dispense"
    HOLD_ORDER = "hold_order"
    CANCEL_ORDER = "cancel_order"
    DECIDE_REFILL = "decide_refill"  # approve, decline, ask for a renewal, link a renewal
    REQUEST_REFILL = "request_refill"  # on a patient's behalf (phone call at the counter)
    OVERRIDE_TOO_SOON = "override_too_soon"
    MANAGE_INVENTORY = "manage_inventory"  # ingredient lots received
    MANAGE_FORMULAS = "manage_formulas"
    RECORD_PAYMENT = "record_payment"
    VIEW_BILLING = "view_billing"
    MANAGE_PRICES = "manage_prices"
    VIEW_REPORTS = "view_reports"
    MANAGE_OUTBOX = "manage_outbox"  # retry or cancel failed emails, view rendered emails
    MANAGE_USERS = "manage_users"
    VIEW_AUDIT = "view_audit"


P = Permission
_TECH = {
    P.VIEW_CLINICAL, P.EDIT_PATIENT, P.ENTER_PRESCRIPTION, P.COMPOUND, P.DISPENSE, P.HOLD_ORDER,
    P.REQUEST_REFILL, P.MANAGE_INVENTORY, P.RECORD_PAYMENT, P.VIEW_BILLING,
}
_PHARMACIST = _TECH | {
    P.MANAGE_PRESCRIPTION, P.OVERRIDE_ALERT, P.VERIFY_ORDER, P.CHECK_ORDER, P.CANCEL_ORDER,
    P.DECIDE_REFILL, P.OVERRIDE_TOO_SOON, P.MANAGE_FORMULAS, P.VIEW_REPORTS, P.MANAGE_OUTBOX,
}
_ADMIN = {P.MANAGE_USERS, P.VIEW_AUDIT, P.MANAGE_PRICES, P.VIEW_REPORTS, P.VIEW_BILLING, P.MANAGE_OUTBOX}

MATRIX: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(_ADMIN),
    Role.PHARMACIST: frozenset(_PHARMACIST),
    Role.TECHNICIAN: frozenset(_TECH),
}


def allows(role: Role | None, permission: Permission) -> bool:
    return role is not None and permission in MATRIX[role]
