"""Signing a patient in to the portal the way a person does: ask for a code, read it from the delivered message,
type it with the date of birth (call with the app's test client)."""
from __future__ import annotations

import re
from typing import Any

from pharmacy.extensions import db
from pharmacy.reminders import delivery, transports
from pharmacy.workflows import orders as order_flow


def delivered_code(app: Any) -> str:
    """Deliver the outbox (the outbox-only email transport keeps what it sent) and return the last code."""
    bodies = [m.get_body(preferencelist=("plain",)).get_content() for m in delivered_messages(app)]
    codes = [c for body in bodies for c in re.findall(r"Your code is: (\d{6})", body)]
    assert codes, bodies
    return codes[-1]


def sign_in(app: Any, client: Any, email: str, dob: Any) -> None:
    r = client.post("/my/sign-in", data={"contact": email})
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    code = delivered_code(app)
    r = client.post("/my/sign-in/code", data={"code": code, "month": dob.month, "day": dob.day, "year": dob.year})
    assert r.status_code == 303 and r.headers["Location"].endswith("/my/"), r.get_data(as_text=True)[:500]


def titrating_world(staff: dict[str, Any], **patient: Any) -> dict[str, Any]:
    """A 1.5 mg capsule prescription that titrates 1.5 → 3 → 4.5 mg, its first fill dispensed (inside a request
    context; the caller commits)."""
    from tests import factories

    ph = factories.actor(staff["pharmacist"])
    f = factories.formula("LDN-CAP-1.5", strength="1.5", prices=(("30", 30, 4500), ("60", 30, 6500),
                                                                  ("90", 30, 8900)))
    doc = factories.prescriber()
    p = factories.patient(ph, **patient)
    rx = factories.prescription(ph, p.id, f.id, doc.id, titration=[{"dose_mg": "1.5", "days": 14},
                                                                    {"dose_mg": "3", "days": 14}])
    w = {"formula": f, "prescriber": doc, "patient": p, "rx": rx, "pharmacist": ph,
         "pharmacist2": factories.actor(staff["pharmacist2"]), "technician": factories.actor(staff["technician"])}

    order = order_flow.start_fill(ph, rx.id)
    factories.run_order_to(w, order.id, "dispensed")
    return w


def delivered_messages(app: Any) -> list[Any]:
    """Deliver the due emails through the outbox-only transport (the real delivery job) and return the messages it
    was handed, as a mail server would have received them."""
    transport = transports.OutboxOnlyTransport()
    sent: list[Any] = []
    original = transport.send

    def keep(message: Any, *, sender: str, recipients: list[str]) -> None:
        sent.append(message)
        original(message, sender=sender, recipients=recipients)

    transport.send = keep  # type: ignore[method-assign]
    with app.app_context():
        delivery.deliver_due(transport=transport)
        db.session.remove()
    return sent
