"""Routes of the intake and compounding workflow: patients, prescribers, prescriptions, orders, labels,
formulas, lots, recall — pages and the JSON API.

Each principal gets a fresh world and the routes run in this order, so reads come first, then the
changes that leave later routes meaningful (verify before replace, replace before discontinue).
A POST answered 409/422 still counts as "ok" (it got past the role check).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.conftest import T0
from tests.web.route_matrix import Route, api_route, staff_page

WRITTEN = (T0.date() - timedelta(days=3)).isoformat()
NO_ADMIN: dict[str, str] = {"admin": "forbidden"}
PHARMACIST_ONLY: dict[str, str] = {"technician": "forbidden", "admin": "forbidden"}


def _patient_form(w: dict[str, Any]) -> dict[str, Any]:
    return {"first_name": "Margaret", "last_name": w["patient"].last_name, "date_of_birth": "1968-04-12",
            "phone": "(217) 555-0199", "conditions": "multiple sclerosis", "reminders_opt_in": "1"}


def _rx_form(w: dict[str, Any]) -> dict[str, Any]:
    return {"patient_id": w["patient"].id, "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id,
            "dose_mg": "4.5", "days_supply": "30", "refills_authorized": "2", "written_date": WRITTEN}


def _rx_json(w: dict[str, Any]) -> dict[str, Any]:
    data = _rx_form(w)
    return {**data, "days_supply": 30, "refills_authorized": 2}


P = lambda w: w["patient"].id  # noqa: E731
RX = lambda w: w["rx"].id  # noqa: E731
ORDER = lambda w: w["order"].id  # noqa: E731

ROUTES: list[Route] = [
    # ---- pages: reads ---------------------------------------------------------------------------
    staff_page("patients.new", lambda w: "/patients/new", **NO_ADMIN),
    staff_page("patients.edit", lambda w: f"/patients/{P(w)}/edit", **NO_ADMIN),
    staff_page("prescriptions.prescribers", lambda w: "/prescribers", **NO_ADMIN),
    staff_page("prescriptions.new_prescriber", lambda w: "/prescribers/new", **NO_ADMIN),
    staff_page("prescriptions.new", lambda w: f"/prescriptions/new?patient_id={P(w)}", **NO_ADMIN),
    staff_page("prescriptions.detail", lambda w: f"/prescriptions/{RX(w)}", **NO_ADMIN),
    staff_page("prescriptions.replace", lambda w: f"/prescriptions/{RX(w)}/replace", **PHARMACIST_ONLY),
    staff_page("compounding.queue", lambda w: "/orders", **NO_ADMIN),
    staff_page("compounding.order", lambda w: f"/orders/{ORDER(w)}", **NO_ADMIN),
    staff_page("compounding.label", lambda w: f"/orders/{ORDER(w)}/label.pdf", **NO_ADMIN),  # 409 before compounding
    staff_page("compounding.record", lambda w: f"/orders/{ORDER(w)}/record", **NO_ADMIN),
    staff_page("compounding.record_pdf", lambda w: f"/orders/{ORDER(w)}/record.pdf", **NO_ADMIN),
    staff_page("compounding.formulas", lambda w: "/formulas", **NO_ADMIN),
    staff_page("compounding.formula", lambda w: f"/formulas/{w['formula'].id}", **NO_ADMIN),
    staff_page("compounding.lots", lambda w: "/lots", **NO_ADMIN),
    staff_page("compounding.recall", lambda w: "/recall?ingredient_lot=NAL-1", **NO_ADMIN),
    staff_page("compounding.recall_csv", lambda w: "/recall.csv?ingredient_lot=NAL-1", **NO_ADMIN),
    # ---- API: reads -------------------------------------------------------------------------------
    api_route("patients-api.list_patients", lambda w: "/api/v1/patients?page=1&per_page=10", **NO_ADMIN),
    api_route("patients-api.get_patient", lambda w: f"/api/v1/patients/{P(w)}", **NO_ADMIN),
    api_route("prescriptions-api.list_prescribers", lambda w: "/api/v1/prescribers", **NO_ADMIN),
    api_route("prescriptions-api.get_prescription", lambda w: f"/api/v1/prescriptions/{RX(w)}", **NO_ADMIN),
    api_route("orders-api.queue", lambda w: "/api/v1/orders", **NO_ADMIN),
    api_route("orders-api.get_order", lambda w: f"/api/v1/orders/{ORDER(w)}", **NO_ADMIN),
    api_route("orders-api.label", lambda w: f"/api/v1/orders/{ORDER(w)}/label.pdf", **NO_ADMIN),
    api_route("orders-api.lot_recall", lambda w: "/api/v1/recall?ingredient_lot=NAL-1", **NO_ADMIN),
    # ---- pages: changes ------------------------------------------------------------------------------
    staff_page("patients.new", lambda w: "/patients/new", method="POST", **NO_ADMIN,
               data=lambda w: {"first_name": "Nora", "last_name": "Newcomer", "date_of_birth": "1970-05-06"}),
    staff_page("patients.edit", lambda w: f"/patients/{P(w)}/edit", method="POST", **NO_ADMIN, data=_patient_form),
    staff_page("prescriptions.new_prescriber", lambda w: "/prescribers/new", method="POST", **NO_ADMIN,
               data=lambda w: {"first_name": "Ann", "last_name": "Neuro", "npi": "1003000126"}),
    staff_page("prescriptions.new", lambda w: "/prescriptions/new", method="POST", **NO_ADMIN, data=_rx_form),
    staff_page("prescriptions.resolve_alert", lambda w: f"/prescriptions/{RX(w)}/alerts/999999/resolve",
               method="POST", technician="forbidden", pharmacist="missing", admin="forbidden",
               data=lambda w: {"reason": "Reviewed with the prescriber"}),
    staff_page("compounding.transition", lambda w: f"/orders/{ORDER(w)}/transitions", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {"to": "verified"}),
    staff_page("compounding.return_fill", lambda w: f"/orders/{ORDER(w)}/return", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {"reason": "lost_in_transit"}),  # 409: not dispensed
    staff_page("compounding.receive_lot", lambda w: "/lots", method="POST", **NO_ADMIN,
               data=lambda w: {"ingredient_name": "Naltrexone hydrochloride USP", "supplier": "PCCA",
                               "lot_number": "P-1", "expiry_date": "2028-01-01"}),
    staff_page("prescriptions.hold", lambda w: f"/prescriptions/{RX(w)}/hold", method="POST", **PHARMACIST_ONLY,
               data=lambda w: {"reason": "Waiting for the prescriber"}),
    staff_page("prescriptions.resume", lambda w: f"/prescriptions/{RX(w)}/resume", method="POST", **PHARMACIST_ONLY),
    staff_page("prescriptions.adopt", lambda w: f"/prescriptions/{RX(w)}/replaces", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {"old_prescription_id": str(RX(w))}),  # 422: not itself
    staff_page("prescriptions.start_fill", lambda w: f"/prescriptions/{RX(w)}/fills", method="POST", **NO_ADMIN,
               data=lambda w: {"delivery": "pickup"}),  # 409: a fill is already in progress
    # ---- API: changes ----------------------------------------------------------------------------------
    api_route("patients-api.create_patient", lambda w: "/api/v1/patients", method="POST", **NO_ADMIN,
              data=lambda w: {"first_name": "Ida", "last_name": "Integration", "date_of_birth": "1975-02-03"}),
    api_route("patients-api.update_patient", lambda w: f"/api/v1/patients/{P(w)}", method="PATCH", **NO_ADMIN,
              data=lambda w: {"phone": "(217) 555-0198"}),
    api_route("prescriptions-api.create_prescriber", lambda w: "/api/v1/prescribers", method="POST", **NO_ADMIN,
              data=lambda w: {"first_name": "Ben", "last_name": "Brain", "npi": "1245319599"}),
    api_route("prescriptions-api.create_prescription", lambda w: "/api/v1/prescriptions", method="POST",
              **NO_ADMIN, data=_rx_json),
    api_route("prescriptions-api.override_alert", lambda w: f"/api/v1/prescriptions/{RX(w)}/alerts/999999/override",
              method="POST", technician="forbidden", pharmacist="missing", admin="forbidden",
              data=lambda w: {"reason": "Reviewed with the prescriber"}),
    api_route("orders-api.transition", lambda w: f"/api/v1/orders/{ORDER(w)}/transitions", method="POST",
              **PHARMACIST_ONLY, data=lambda w: {"to": "verified"}),
    api_route("orders-api.return_fill", lambda w: f"/api/v1/orders/{ORDER(w)}/return", method="POST",
              **PHARMACIST_ONLY, data=lambda w: {"reason": "lost_in_transit"}),
    api_route("prescriptions-api.adopt", lambda w: f"/api/v1/prescriptions/{RX(w)}/replaces", method="POST",
              **PHARMACIST_ONLY, data=lambda w: {"old_prescription_id": RX(w)}),
    api_route("prescriptions-api.hold", lambda w: f"/api/v1/prescriptions/{RX(w)}/hold", method="POST",
              **PHARMACIST_ONLY, data=lambda w: {"reason": "Waiting for the prescriber"}),
    api_route("prescriptions-api.resume", lambda w: f"/api/v1/prescriptions/{RX(w)}/resume", method="POST",
              **PHARMACIST_ONLY),
    api_route("orders-api.start_fill", lambda w: f"/api/v1/prescriptions/{RX(w)}/fills", method="POST", **NO_ADMIN,
              data=lambda w: {}),
    # ---- last: closing the prescription ----------------------------------------------------------------
    staff_page("prescriptions.replace", lambda w: f"/prescriptions/{RX(w)}/replace", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {k: v for k, v in _rx_form(w).items() if k != "patient_id"}),
    api_route("prescriptions-api.replace", lambda w: f"/api/v1/prescriptions/{w['other_rx'].id}/replace",
              method="POST", **PHARMACIST_ONLY,
              data=lambda w: {k: v for k, v in _rx_json(w).items() if k != "patient_id"}),
    staff_page("prescriptions.discontinue", lambda w: f"/prescriptions/{RX(w)}/discontinue", method="POST",
               **PHARMACIST_ONLY, data=lambda w: {"reason": "Stopped by the prescriber"}),
    api_route("prescriptions-api.discontinue", lambda w: f"/api/v1/prescriptions/{RX(w)}/discontinue",
              method="POST", **PHARMACIST_ONLY, data=lambda w: {"reason": "Stopped by the prescriber"}),
]

ROUTES.append(staff_page("patients.add_side_effect", lambda w: f"/patients/{w['patient'].id}/side-effects",
                         method="POST", admin="forbidden", data=lambda w: {"effect": "nausea", "note": "week one"}))
