"""Every route × every kind of visitor: nobody gets what their role does not allow, and no route is left out.

Each answer is read, not only its status: anonymous visitors and another patient's link see nothing of the
patient; admins ("minimum necessary") see no patient's name, birth date, contact details, medicine, dose,
directions, diagnosis or side effect on any page, export or email preview; and any answer that does show a
patient's identity to staff (or to a patient on their own link) must have written an audit event naming that
patient in the same request — so a new page that shows patient data and forgets to audit it fails here.
"""
from __future__ import annotations

import importlib
import pkgutil
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.patients import services as patient_services
from pharmacy.patients.rules import SideEffect
from pharmacy.refills.rules import RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import OutboxState
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow
from tests import factories
from tests.conftest import login
from tests.web import route_matrix
from tests.web.route_matrix import PRINCIPALS, Route

MODULES = [importlib.import_module(f"tests.web.route_matrix.{info.name}")
           for info in pkgutil.iter_modules(route_matrix.__path__)]
ROUTES: list[Route] = [route for module in MODULES for route in getattr(module, "ROUTES", [])]
# A module may define open_patient_session(app, client, world): a confirmed refill-link session
# for the *other* patient, so the "other_patient" column really holds another patient's link.
OPENERS = [module.open_patient_session for module in MODULES if hasattr(module, "open_patient_session")]


def test_no_route_is_left_out_of_the_matrix(app: Flask) -> None:
    covered = {(r.endpoint, r.method) for r in ROUTES}
    missing = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (rule.endpoint, method) not in covered:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == [], "routes missing from tests/web/route_matrix: " + ", ".join(missing)


@pytest.fixture
def matrix_world(app: Flask, staff: dict[str, Any]) -> dict[str, Any]:
    with app.test_request_context("/"):
        w = factories.world(staff, directions=DIRECTIONS)
        # Clinical values that land in the audit trail's details: a side effect, a screening finding.
        patient_services.add_side_effect(w["pharmacist"], w["patient"].id,
                                         {"effect": SideEffect.INSOMNIA, "note": SIDE_EFFECT_NOTE})
        other = factories.patient(w["pharmacist"], first_name="Otto", last_name="Otherpatient",
                                  date_of_birth=date(1950, 1, 2), email="otto@example.com", phone="(217) 555-0199",
                                  address_line1="9 Elm Street",
                                  conditions=["multiple sclerosis", "breastfeeding"])
        other_rx = factories.prescription(w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id)

        order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        from pharmacy.core import links
        from pharmacy.reminders import outbox
        from pharmacy.reminders.rules import MessageKind

        message = outbox.enqueue_notice(MessageKind.REQUEST_RECEIVED, patient_id=w["patient"].id,
                                        prescription_id=w["rx"].id, order_id=order.id)
        prefs_token = links.make_token(links.PREFERENCES, w["patient"].id)
        # The other patient: a dispensed fill not yet paid (the outstanding-balance report), a refill asked for by
        # phone (the refill queue) and a renewal request to the prescriber (an email about a patient to a doctor).
        other_order = order_flow.start_fill(w["pharmacist"], other_rx.id)
        factories.run_order_to(w, other_order.id, "dispensed")
        refill_flow.request(w["technician"], other_rx.id, source=RequestSource.STAFF)
        renewal = renewal_flow.ask_prescriber(w["pharmacist"], prescription_id=other_rx.id)
        # An email the mail server refused, its reply quoting the patient's address (the outbox and dashboard lists).
        failed = outbox.enqueue_notice(MessageKind.RENEWAL_IN_PROGRESS, patient_id=w["patient"].id,
                                       prescription_id=w["rx"].id)
        failed.state, failed.attempts = OutboxState.FAILED, 8
        failed.last_error = "550 5.1.1 <margaret@example.com>: Recipient address rejected"
        renewal_message = db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.renewal_id == renewal.id)).scalar_one()
        db.session.commit()
        out = {k: v for k, v in w.items()}
        out.update(other=other, other_rx=other_rx, order=order, staff=staff, message=message,
                   prefs_token=prefs_token, renewal_message=renewal_message)
        # Identifiers only: the rows are used outside this context.
        return {k: (_Ids(v) if hasattr(v, "id") and not isinstance(v, dict) else v) for k, v in out.items()}


class _Ids:
    """A detached stand-in carrying the attributes tests need (id and a few strings)."""

    def __init__(self, row: Any) -> None:
        for name in ("id", "last_name", "rx_number", "lot_number", "patient_id", "date_of_birth", "email", "role"):
            if hasattr(row, name):
                setattr(self, name, getattr(row, name))


def _client_for(app: Flask, principal: str, w: dict[str, Any]) -> tuple[FlaskClient, dict[str, str]]:
    client = app.test_client()
    headers: dict[str, str] = {}
    if principal in ("technician", "pharmacist", "admin"):
        login(client, w["staff"][principal])
        with app.test_request_context("/"):
            from pharmacy.core import services
            from tests.factories import actor

            _, raw = services.issue_token(actor(w["staff"][principal]), w["staff"][principal].id, "matrix")
            db.session.commit()
        headers["Authorization"] = f"Bearer {raw}"
    elif principal == "other_patient":
        for opener in OPENERS:
            opener(app, client, w)
    return client, headers


def _outcome(route: Route, response: Any) -> str:
    status = response.status_code
    location = response.headers.get("Location", "")
    if status in (301, 302, 303) and "/login" in location:
        return "login"
    if status == 401:
        return "login"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "missing"
    if status >= 500:
        return "error"
    if status >= 400 and route.expect.get("anonymous") == "invalid":
        return "invalid"
    return "ok"


# What identifies each patient of the matrix world on a page, in the forms pages and exports use.
IDENTITY = {
    "patient": ("Ellison", "1968-04-12", "April 12, 1968", "04/12/1968", "margaret@example.com", "555-0101",
                "14 Oak Lane"),
    "other": ("Otherpatient", "1950-01-02", "January 2, 1950", "otto@example.com", "555-0199"),
}
DIRECTIONS = "Take 1 capsule by mouth at bedtime, with a full glass of water (matrix)"
# Clinical facts of those patients (medicine with its dose and directions, diagnosis, side effect, screening).
# The side effect is recognised by its note: its name ("Insomnia") is also one of the choices any report form offers.
SIDE_EFFECT_NOTE = "Wakes at 3 am every night since the dose went up (matrix)"
CLINICAL = (DIRECTIONS, "Multiple sclerosis (G35)", "multiple sclerosis", SIDE_EFFECT_NOTE, '"effect":"insomnia"',
            "breastfeeding",
            "pregnancy_breastfeeding", "4.5 mg daily", "Dose: 4.5 mg", "4.5 mg at bedtime")


def _shown(body: str, markers: tuple[str, ...]) -> list[str]:
    return [m for m in markers if m in body]


def _audited(app: Flask, patient_id: int) -> int:
    """Audit events that record something done to or seen of this patient (refusals aside)."""
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.patient_id == patient_id, AuditEvent.outcome == "ok")).scalar_one()


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_route_for(principal: str, app: Flask, matrix_world: dict[str, Any]) -> None:
    client, headers = _client_for(app, principal, matrix_world)
    victim = matrix_world["patient"]
    patients = {"patient": matrix_world["patient"].id, "other": matrix_world["other"].id}
    failures = []
    for route in ROUTES:
        before = {name: _audited(app, pid) for name, pid in patients.items()}
        expected = route.expect[principal]
        path = route.path(matrix_world)
        kwargs: dict[str, Any] = {"headers": headers if route.json or path.startswith("/api/") else {}}
        if route.data is not None:
            if route.json:
                kwargs["json"] = route.data(matrix_world)
            else:
                kwargs["data"] = route.data(matrix_world)
        response = client.open(path, method=route.method, **kwargs)
        body = response.get_data().decode("utf-8", "replace")
        response.close()
        got = _outcome(route, response)
        if got == "error":
            failures.append(f"{route.method} {path}: server error {response.status_code}")
            continue
        if expected != "any" and got != expected:
            failures.append(f"{route.method} {path}: expected {expected}, got {got} ({response.status_code})")
        outsider = principal in ("anonymous", "other_patient") and route.endpoint != "static"
        if outsider and (victim.last_name in body or victim.date_of_birth.isoformat() in body):
            failures.append(f"{route.method} {path}: shows the patient's data to {principal}")
        if route.endpoint != "static":
            failures += _content_problems(app, principal, route, path, body, patients, before)
        if route.endpoint == "auth.logout" and principal in ("technician", "pharmacist", "admin"):
            login(client, matrix_world["staff"][principal])
    assert failures == [], "\n".join(failures)


def _content_problems(app: Flask, principal: str, route: Route, path: str, body: str, patients: dict[str, int],
                      before: dict[str, int]) -> list[str]:
    """What this answer shows that this visitor may not see, and patient data shown without an audit event."""
    where = f"{route.method} {path} as {principal}"
    out = []
    if principal == "admin":  # minimum necessary: no identity, no clinical fact of any patient
        seen = _shown(body, IDENTITY["patient"] + IDENTITY["other"] + CLINICAL)
        if seen:
            out.append(f"{where}: shows {seen} to an admin")
    elif principal in ("anonymous", "other_patient"):
        seen = _shown(body, IDENTITY["patient"] + CLINICAL)
        if seen:
            out.append(f"{where}: shows {seen} to {principal}")
    for name, pid in patients.items():
        seen = _shown(body, IDENTITY[name])
        if seen and _audited(app, pid) <= before[name]:
            out.append(f"{where}: shows {name} ({seen[:2]}) without an audit event for that patient")
    return out
