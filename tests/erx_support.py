"""Helpers for the e-prescribing tests: the SCRIPT fixtures, an "ncpdp" token, the app served on loopback, and a
loopback HTTP server playing the e-prescribing intermediary."""
from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Any

from werkzeug.serving import make_server

from pharmacy.eprescribing import ncpdp

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ncpdp"
OKAFOR_NPI = "1987654328"
DEFAULTS = {
    "MESSAGE_ID": "NEWRX-0001", "ORDER_NUMBER": "PON-7781", "LAST_NAME": "Ellison", "FIRST_NAME": "Margaret",
    "BIRTH_DATE": "1968-04-12", "POSTAL_CODE": "62704", "NPI": OKAFOR_NPI, "WRITTEN_DATE": "2026-11-20",
    "REFILLS": "5", "RELATES_TO": "",
}


def fixture(name: str, **values: str) -> bytes:
    """A fixture with its ${…} placeholders filled in (defaults above, overridden by `values`)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return Template(text).safe_substitute({**DEFAULTS, **values}).encode("utf-8")


def ncpdp_token(app: Any, email: str = "erx-intermediary@pharmacy.test") -> str:
    """A pharmacist-role service account for the intermediary and its "ncpdp" token (the raw value)."""
    from pharmacy.core import services
    from pharmacy.core.actor import Actor
    from pharmacy.core.roles import Role
    from pharmacy.extensions import db

    with app.test_request_context("/"):
        console = Actor(kind="staff", role=Role.ADMIN)
        user = services.create_user(console, email=email, full_name="E-prescribing intermediary",
                                    role=Role.PHARMACIST, password="intermediary password 1")
        _token, raw = services.issue_token(console, user.id, "intermediary", scope="ncpdp")
        db.session.commit()
    return raw


def api_token(app: Any, staff_member: Any, scope: str = "api") -> str:
    from pharmacy.core import services
    from pharmacy.extensions import db
    from tests.factories import actor

    with app.test_request_context("/"):
        _token, raw = services.issue_token(actor(staff_member), staff_member.id, "client", scope=scope)
        db.session.commit()
    return raw


def post_xml(url: str, body: bytes, token: str | None, content_type: str = "application/xml") -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback http
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """The app on a loopback port (a real HTTP server in a thread); yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class Intermediary:
    """A loopback HTTP server playing the e-prescribing intermediary.

    The pharmacy posts its outbound messages to /script; each is kept (bytes and the Authorization header) and
    answered with a SCRIPT Status 010 relating to its MessageID — or with what the test queued in `replies`: an
    HTTP status without a body (e.g. 503), or a SCRIPT Error code. `send` posts a prescriber's message to the
    pharmacy's endpoint, as the real intermediary would.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.authorizations: list[str | None] = []
        self.replies: deque[tuple[int, str | None]] = deque()  # (HTTP status, SCRIPT Error code or None)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.received.append(body)
                outer.authorizations.append(self.headers.get("Authorization"))
                status, error = outer.replies.popleft() if outer.replies else (200, None)
                if status >= 300:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    relates = ncpdp.parse(body).header
                except ncpdp.ScriptError:
                    relates = ncpdp.Header()
                header = ncpdp.Header(to=relates.sender, sender="INTERMEDIARY", message_id=f"ACK-{len(outer.received)}",
                                      relates_to=relates.message_id, sent_time="2026-11-23T15:00:00Z")
                kind, answer = (("Error", ncpdp.Answer(code=error, description="Receiver said no")) if error else
                                ("Status", ncpdp.Answer(code="010", description="Delivered")))
                reply = ncpdp.answer_message(kind, header, answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/script"

    def __enter__(self) -> Intermediary:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def send(self, pharmacy_url: str, token: str, body: bytes) -> ncpdp.ScriptMessage:
        """Post a prescriber's message to the pharmacy; the SCRIPT answer, read with the pharmacy's own parser."""
        status, answer = post_xml(f"{pharmacy_url}/ncpdp/script", body, token)
        assert status == 200, (status, answer[:300])
        return ncpdp.parse(answer)

    def messages(self, kind: str) -> list[ncpdp.ScriptMessage]:
        return [m for m in (ncpdp.parse(b) for b in self.received) if m.kind == kind]


def medication_request(**overrides: Any) -> dict[str, Any]:
    """A FHIR MedicationRequest as an EHR sends one (Ellison, Dr. Okafor, 4.5 mg capsules); `overrides` replace
    its top-level fields."""
    body = {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.9999", "value": "EHR-RX-1001"}],
        "contained": [
            {"resourceType": "Patient", "id": "p", "name": [{"family": "Ellison", "given": ["Margaret"]}],
             "birthDate": "1968-04-12", "gender": "female",
             "address": [{"line": ["14 Oak Lane"], "city": "Springfield", "state": "IL", "postalCode": "62704"}]},
            {"resourceType": "Practitioner", "id": "d", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                                                          "value": OKAFOR_NPI}],
             "name": [{"family": "Okafor", "given": ["Adaeze"], "suffix": ["MD"]}]},
        ],
        "subject": {"reference": "#p"}, "requester": {"reference": "#d"},
        "medicationCodeableConcept": {"text": "Naltrexone 4.5 mg capsule (compounded)"},
        "authoredOn": "2026-11-20",
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G35"}]}],
        "dosageInstruction": [{"text": "Take 1 capsule by mouth at bedtime",
                               "doseAndRate": [{"doseQuantity": {"value": 4.5, "unit": "mg"}}]}],
        "dispenseRequest": {"numberOfRepeatsAllowed": 3, "quantity": {"value": 30, "unit": "capsule"},
                            "expectedSupplyDuration": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org",
                                                       "code": "d"}},
    }
    body.update(overrides)
    return body
