"""Routes of refills: the patient's signed-link pages, the pharmacy's queue and renewals, the JSON API.

The patient-link routes are requested with a real link for world["patient"] only by the
"other_patient" visitor, whose browser has confirmed the date of birth on *another* patient's link
(open_patient_session below): that visitor must be sent back to the date-of-birth question and never
see the patient's data. The other visitors have no app context to sign a link in, so they get a
tampered token and must get the friendly "link does not work" page ("invalid"); tests/web/
test_refill_link_pages.py covers real links for anonymous visitors.
"""
from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.web.route_matrix import Route, api_route, staff_page

TAMPERED = "eyJwIjoxLCJyeCI6MSwibiI6Im5vcGUifQ.AAAAAA.tampered-signature"
NO_SUCH = 999999


def _token(w: dict[str, Any]) -> str:
    return w.get("patient_refill_token", TAMPERED)


def open_patient_session(app: Flask, client: FlaskClient, world: dict[str, Any]) -> None:
    """Confirm the date of birth on world["other"]'s own refill link in this client, and sign a link for
    world["patient"] that the matrix then tries with that client."""
    from pharmacy.core import links
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        own = links.make_token(links.REFILL, world["other"].id, world["other_rx"].id)
        world["patient_refill_token"] = links.make_token(links.REFILL, world["patient"].id, world["rx"].id)
        db.session.commit()
    dob = world["other"].date_of_birth
    response = client.post(f"/r/{own}", data={"month": dob.month, "day": dob.day, "year": dob.year})
    assert response.status_code == 303 and response.headers["Location"].endswith("/refill"), response.status_code
    assert client.get(f"/r/{own}/refill").status_code == 200


def _link(endpoint: str, method: str, suffix: str, data: Any = None) -> Route:
    # "ok" for other_patient means: a real link, answered without the patient's data (a redirect to
    # the date-of-birth question, or that question itself); "invalid": the tampered-link page.
    ok_for_other = "invalid" if endpoint == "refills.link_confirm" else "ok"
    return Route(endpoint, method, lambda w: f"/r/{_token(w)}{suffix}",
                 {"anonymous": "invalid", "other_patient": ok_for_other, "technician": "invalid",
                  "pharmacist": "invalid", "admin": "invalid"}, data=data)


ROUTES: list[Route] = [
    _link("refills.link", "GET", ""),
    # The other patient types *their own* date of birth on this patient's link: refused (422), one attempt counted.
    _link("refills.link_confirm", "POST", "", data=lambda w: {
        "month": w["other"].date_of_birth.month, "day": w["other"].date_of_birth.day,
        "year": w["other"].date_of_birth.year}),
    _link("refills.link_refill", "GET", "/refill"),
    _link("refills.link_request", "POST", "/refill", data=lambda w: {"delivery": "pickup"}),
    _link("refills.link_requested", "GET", "/requested"),
    staff_page("refills.queue", lambda w: "/refills", admin="forbidden"),
    staff_page("refills.renewals_queue", lambda w: "/refills/renewals", admin="forbidden"),
    staff_page("refills.approve", lambda w: f"/refills/{NO_SUCH}/approve", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden"),
    staff_page("refills.decline", lambda w: f"/refills/{NO_SUCH}/decline", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden",
               data=lambda w: {"reason": "Prescriber asked us to pause"}),
    staff_page("refills.ask_renewal", lambda w: f"/refills/{NO_SUCH}/renewal", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden"),
    # The patient's prescription has a fill in progress: allowed roles get a clear refusal (409), not a 403.
    staff_page("refills.staff_request", lambda w: f"/prescriptions/{w['rx'].id}/refill-requests", method="POST",
               admin="forbidden", data=lambda w: {"delivery": "pickup"}),
    staff_page("refills.renewal", lambda w: f"/renewals/{NO_SUCH}", technician="missing", pharmacist="missing",
               admin="forbidden"),
    staff_page("refills.send_renewal", lambda w: f"/renewals/{NO_SUCH}/send", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden"),
    api_route("refill-requests.create", lambda w: "/api/v1/refill-requests", method="POST", admin="forbidden",
              data=lambda w: {"prescription_id": w["rx"].id}),
    api_route("refill-requests.queue", lambda w: "/api/v1/refill-requests", admin="forbidden"),
    api_route("refill-requests.approve", lambda w: f"/api/v1/refill-requests/{NO_SUCH}/approve", method="POST",
              technician="forbidden", pharmacist="missing", admin="forbidden"),
    api_route("refill-requests.decline", lambda w: f"/api/v1/refill-requests/{NO_SUCH}/decline", method="POST",
              technician="forbidden", pharmacist="missing", admin="forbidden",
              data=lambda w: {"reason": "Prescriber asked us to pause"}),
    api_route("refill-requests.renewal", lambda w: f"/api/v1/refill-requests/{NO_SUCH}/renewal", method="POST",
              technician="forbidden", pharmacist="missing", admin="forbidden"),
]
