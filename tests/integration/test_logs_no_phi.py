"""No patient data in any log line, in the development (plain) and production (JSON) formats.

The app's own handler is captured (stderr swapped before create_app, so the handler configured
by pharmacy.core.logging_setup writes to the test), while a patient's whole journey runs: intake
over HTTP with name, date of birth, email, phone, address and medications; a prescription; a fill
walked to dispensed; the reminder emails delivered; the patient's refill link opened (a wrong date
of birth first) and a refill asked for and approved; pages loaded; a 404, a 403, a 422 and an
unexpected exception whose message holds the patient's details. Part of it goes through a real
werkzeug server in a thread, so its request lines ("GET /search?q=… HTTP/1.1" 200) are logged too.
Then no log line may contain anything that identifies the patient.
"""
from __future__ import annotations

import http.cookiejar
import io
import json
import logging
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from pharmacy import create_app
from pharmacy.core import logging_setup
from pharmacy.extensions import db
from tests.conftest import PASSWORD, login
from tests.factories import actor, formula, prescriber, prescription, run_order_to

PATIENT_FORM = {
    "first_name": "Quintessa", "last_name": "Vandermolen", "date_of_birth": "1961-07-19",
    "email": "quintessa.vandermolen@mailbox.example", "phone": "(312) 555-0147",
    "address_line1": "4821 Juniper Hollow Road", "address_line2": "Apartment 9C", "city": "Evanston",
    "state": "IL", "postal_code": "60201", "conditions": "Fibromyalgia",
    "medications": "Tizanidine 4 mg at bedtime\nDuloxetine 60 mg daily", "allergies": "Penicillin",
    "reminders_opt_in": "on", "delivery_preference": "pickup", "shipping_days": "2",
}
# Everything that would identify her, in the forms it could take in a log line (compared case-insensitively).
NEEDLES = (
    "Quintessa", "Vandermolen",
    "1961-07-19", "07/19/1961", "7/19/1961", "19610719", "Jul 19, 1961", "July 19, 1961", "19 Jul 1961",
    "quintessa.vandermolen@mailbox.example", "mailbox.example",
    "(312) 555-0147", "312-555-0147", "312.555.0147", "3125550147", "555-0147",
    "4821 Juniper", "Juniper Hollow", "Apartment 9C", "60201", "Evanston",
    "Tizanidine", "Duloxetine", "Fibromyalgia", "Penicillin",
)


def leaks(text: str) -> list[str]:
    lowered = text.lower()
    return [needle for needle in NEEDLES if needle.lower() in lowered]


class Capture(io.StringIO):
    """Where the app's log handler writes (its StreamHandler holds a lock around each write)."""


@pytest.fixture(params=["plain", "json"])
def logged(request: pytest.FixtureRequest, app_config: dict, clock: Any, staff: dict,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, Capture, str]]:
    stream = Capture()
    monkeypatch.setattr(sys, "stderr", stream)
    app = create_app({**app_config, "LOG_FORMAT": request.param}, clock=clock)

    @app.get("/__boom/<int:patient_id>")
    def boom(patient_id: int) -> Any:
        from pharmacy.patients.models import Patient

        p = db.session.get(Patient, patient_id)
        # An exception whose text carries PHI, as a careless library or a bug might raise.
        raise RuntimeError(f"cannot label {p.full_name} born {p.date_of_birth} at {p.address_line1}, {p.email}, "
                           f"{p.phone}, taking {p.medications}")

    yield app, stream, request.param
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    monkeypatch.undo()
    logging_setup.configure("plain")  # back to the real stderr for the tests that follow


def test_no_phi_in_any_log_line(logged: tuple[Flask, Capture, str], staff: dict, clock: Any) -> None:
    app, stream, fmt = logged
    logging.getLogger("pharmacy.test").info("journey starts")  # the capture works at all

    pharmacist = app.test_client()
    login(pharmacist, staff["pharmacist"])

    # Intake over HTTP, with everything that identifies her.
    created = pharmacist.post("/patients/new", data=PATIENT_FORM)
    assert created.status_code == 302, created.get_data(as_text=True)[:2000]
    patient_id = int(created.headers["Location"].rstrip("/").rsplit("/", 1)[-1])

    with app.test_request_context("/"):
        ph = actor(staff["pharmacist"])
        f = formula()
        rx = prescription(ph, patient_id, f.id, prescriber().id)
        db.session.commit()
        rx_id = rx.id
    filled = pharmacist.post(f"/prescriptions/{rx_id}/fills", data={})
    assert filled.status_code < 400, filled.status_code
    with app.test_request_context("/"):
        from pharmacy.compounding.models import Order

        order_id = db.session.execute(sa.select(Order.id).where(Order.prescription_id == rx_id)).scalar_one()
        w = {"formula": formula(), "pharmacist": ph, "pharmacist2": actor(staff["pharmacist2"]),
             "technician": actor(staff["technician"])}
        run_order_to(w, order_id, "dispensed")
        db.session.commit()

    # Pages, searches (the query string holds her name and birth date), errors.
    for path in ("/", "/patients/", f"/patients/{patient_id}", f"/patients/{patient_id}/edit",
                 f"/prescriptions/{rx_id}", "/refills", "/outbox", f"/billing/patients/{patient_id}/costs",
                 "/search?q=Vandermolen", "/search?q=1961-07-19", "/search?q=quintessa.vandermolen%40mailbox.example"):
        assert pharmacist.get(path).status_code < 500, path
    assert pharmacist.get("/patients/999999").status_code == 404
    invalid = dict(PATIENT_FORM, email="quintessa.vandermolen@", postal_code="Evanston IL")
    assert pharmacist.post("/patients/new", data=invalid).status_code == 422
    admin = app.test_client()
    login(admin, staff["admin"])
    assert admin.get(f"/patients/{patient_id}").status_code == 403
    with app.test_request_context("/"):
        from pharmacy.core import services as core_services

        _, api_token = core_services.issue_token(actor(staff["pharmacist"]), staff["pharmacist"].id, "logs")
        db.session.commit()
    bad_api = pharmacist.post("/api/v1/refill-requests", json={"prescription_id": "Vandermolen",
                                                              "date_of_birth": "1961-07-19"},
                              headers={"Authorization": f"Bearer {api_token}"})
    assert bad_api.status_code == 422
    assert pharmacist.get(f"/__boom/{patient_id}").status_code == 500

    # Weeks later: her reminders fall due and go out, and she uses the link in one of them.
    clock.advance(timedelta(days=25))
    with app.app_context():
        from pharmacy.core import links
        from pharmacy.reminders import delivery

        delivery.deliver_due()
        with app.test_request_context("/"):
            token = links.make_token(links.REFILL, patient_id, rx_id)
    patient_browser = app.test_client()
    assert patient_browser.get(f"/r/{token}").status_code == 200
    assert patient_browser.post(f"/r/{token}", data={"date_of_birth": "1961-07-20"}).status_code == 422
    assert patient_browser.post(f"/r/{token}", data={"date_of_birth": "1961-07-19"}).status_code == 303
    assert patient_browser.get(f"/r/{token}/refill").status_code == 200
    asked = patient_browser.post(f"/r/{token}/refill", data={"delivery": "ship"})
    assert asked.status_code in (303, 409, 422), asked.status_code
    assert patient_browser.get(f"/r/{token}-tampered").status_code in (400, 404)
    login(pharmacist, staff["pharmacist"])  # the session from weeks ago has expired
    with app.app_context():
        from pharmacy.refills.models import RefillRequest

        request_id = db.session.execute(sa.select(RefillRequest.id)).scalar()
    if request_id is not None:
        assert pharmacist.post(f"/refills/{request_id}/approve").status_code < 500
    with app.app_context():
        delivery.deliver_due()

    # The same kinds of requests through a real server, whose request lines werkzeug logs.
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        def fetch(path: str, data: dict[str, str] | None = None) -> int:
            body = urllib.parse.urlencode(data).encode() if data is not None else None
            try:
                with browser.open(base + path, data=body, timeout=30) as response:
                    response.read()
                    return response.status
            except urllib.error.HTTPError as exc:
                exc.read()
                exc.close()
                return exc.code

        assert fetch("/login", {"email": staff["pharmacist"].email, "password": PASSWORD}) == 200
        assert fetch("/search?q=Quintessa+Vandermolen&dob=07%2F19%2F1961") == 200
        assert fetch(f"/patients/{patient_id}") == 200
        assert fetch(f"/patients/{patient_id}/edit", dict(PATIENT_FORM, phone="312.555.0147")) < 500
        assert fetch(f"/__boom/{patient_id}?name=Vandermolen") == 500
        assert fetch("/no/such/page") == 404
        assert fetch(f"/r/{token}") == 410  # used up by the refill above: gone
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    text = stream.getvalue()
    lines = [entry for entry in text.splitlines() if entry.strip()]
    messages = _messages(lines, fmt)

    # The capture saw what it should: our marker, werkzeug's request lines, the error, request ids.
    assert any("journey starts" in m for m in messages)
    request_lines = [m for m in messages if re.search(r'"(GET|POST) /\S* HTTP/1\.1" \d{3}', m)]
    assert any('"GET /patients/' in m for m in request_lines), messages[-20:]
    assert any('"GET /r/[token] HTTP/1.1" 410' in m for m in request_lines), request_lines
    assert any('"GET /search?[query] HTTP/1.1" 200' in m for m in request_lines), request_lines
    assert any("unhandled RuntimeError" in m for m in messages)
    assert any("delivery run" in m for m in messages), messages
    assert not any("\x1b[" in entry for entry in lines)  # no terminal colour codes in a log file

    found = leaks(text)
    assert found == [], "patient data in the logs: " + ", ".join(found) + "\n" + "\n".join(
        entry for entry in lines if leaks(entry))[:3000]
    assert token not in text


def _messages(lines: list[str], fmt: str) -> list[str]:
    if fmt == "json":
        records = [json.loads(entry) for entry in lines]  # every line is one JSON object
        assert all(set(r) == {"ts", "level", "logger", "request_id", "message"} for r in records)
        ids = {r["request_id"] for r in records if r["logger"] == "pharmacy.errors"}
        assert ids and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
        return [r["message"] for r in records]
    pattern = re.compile(r"^\d{4}-\d{2}-\d{2} [\d:,]+ [A-Z]+ \S+ \[[^\]]+\] ")
    assert all(pattern.match(entry) for entry in lines), [entry for entry in lines if not pattern.match(entry)][:5]
    assert any(re.search(r"pharmacy\.errors \[[0-9a-f]{16}\]", entry) for entry in lines)
    return lines


def test_the_check_would_catch_a_leak() -> None:
    """The needles are not vacuous: a line naming her is caught even though the filter cannot mask names."""
    line = logging_setup.redact("refill asked by Quintessa Vandermolen, 4821 Juniper Hollow Road (Tizanidine)")
    assert leaks(line) == ["Quintessa", "Vandermolen", "4821 Juniper", "Juniper Hollow", "Tizanidine"]
    masked = logging_setup.redact("dob 1961-07-19 / 7/19/1961 / July 19, 1961, mail quintessa.vandermolen@"
                                  "mailbox.example, phone (312) 555-0147, 312.555.0147, link /r/abc.def?x=1")
    assert leaks(masked) == [] and "/r/[token]" in masked
