"""The patient's refill pages over HTTP: the birth-date gate, what the page shows, one click, every bad link."""
from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy import create_app
from pharmacy.compounding.rules import DeliveryMethod
from pharmacy.core import links
from pharmacy.core.models import AuditEvent, LinkGuard
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RefillRequestState, RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from tests import factories
from tests.pages import confirm_birth_date
from tests.pages import page_text as text

DOB = date(1968, 4, 12)
PHONE = "(217) 555-0100"


def make(app: Flask, staff: dict, *, dispensed: bool = True, in_progress: bool = False, **rx: Any) -> dict[str, Any]:
    """A patient (and another one) with a refill link each; committed. Returns ids and tokens."""
    with app.test_request_context("/"):
        w = factories.world(staff, **rx)
        if dispensed:
            order = order_flow.start_fill(w["pharmacist"], w["rx"].id)
            factories.run_order_to(w, order.id, "dispensed")
        if in_progress:
            order_flow.start_fill(w["pharmacist"], w["rx"].id)
        other = factories.patient(w["pharmacist"], first_name="Otto", last_name="Otherpatient",
                                  date_of_birth=date(1950, 1, 2), email="otto@example.com",
                                  address_line1="9 Elm Street")
        other_rx = factories.prescription(w["pharmacist"], other.id, w["formula"].id, w["prescriber"].id)
        out = {
            "patient_id": w["patient"].id, "rx_id": w["rx"].id, "other_rx_id": other_rx.id,
            "token": links.make_token(links.REFILL, w["patient"].id, w["rx"].id),
            "other_token": links.make_token(links.REFILL, other.id, other_rx.id),
            "pharmacist": w["pharmacist"],
        }
        db.session.commit()
    return out


def confirm(client: FlaskClient, token: str, dob: date = DOB) -> Any:
    return confirm_birth_date(client, token, dob)


def requests_for(app: Flask, rx_id: int) -> list[RefillRequest]:
    with app.app_context():
        rows = list(db.session.execute(sa.select(RefillRequest).where(RefillRequest.prescription_id == rx_id))
                    .scalars())
        db.session.expunge_all()
        return rows


def assert_shows_nothing_of_the_patient(page: str) -> None:
    for secret in ("Ellison", "Margaret", "1968", "Naltrexone", "Oak Lane", "$"):
        assert secret not in page, secret


# ---- the gate -------------------------------------------------------------------------------------


def test_the_link_asks_only_for_the_birth_date(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff)
    response = client.get(f"/r/{d['token']}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    page = text(response)
    assert "date of birth" in page.lower()
    assert_shows_nothing_of_the_patient(page)
    body = response.get_data(as_text=True)
    for name in ("month", "day", "year"):  # three labelled boxes
        assert re.search(rf'<label for="dob-{name}">', body) and f'id="dob-{name}" name="{name}"' in body
    # Nothing further opens without the birth date.
    for path in ("/refill", "/requested"):
        response = client.get(f"/r/{d['token']}{path}")
        assert response.status_code == 303 and response.headers["Location"].endswith(f"/r/{d['token']}")
    response = client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"})
    assert response.status_code == 303 and requests_for(app, d["rx_id"]) == []


def test_the_refill_page_shows_medicine_dates_price_and_address(app: Flask, client: FlaskClient,
                                                                 staff: dict) -> None:
    d = make(app, staff)
    response = confirm(client, d["token"])
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/r/{d['token']}/refill")
    response = client.get(f"/r/{d['token']}/refill")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    page = text(response)
    assert "Naltrexone 4.5 mg capsules" in page
    assert "Take 1 capsule (4.5 mg) by mouth at bedtime" in page
    assert "About 30 days: your last dose is on Tuesday, December 22, 2026" in page
    assert "Refills left 5" in page
    assert "30 capsules (30-day supply)" in page
    assert "It takes 2 business days" in page
    # Asked the day the last fill was handed over: compounding would be done by Wednesday 25 November, but the
    # patient may have the next fill only once 80% of this one is used (docs/domain.md "Refill timing"), so the
    # dates promised are those: pick-up (the patient's preference, chosen already) from Thursday 17 December.
    assert "Ready on Thursday, December 17, 2026 · $55.00" in page
    # Shipping: to the address on file, leaving on the 15th and arriving Thursday 17 December, $63.95.
    assert "To: 14 Oak Lane, Springfield, IL 62704" in page
    assert "Arrives by Thursday, December 17, 2026 · $63.95 (includes $8.95 shipping)" in page
    body = response.get_data(as_text=True)
    assert re.search(r'value="pickup"\s+checked', body) and 'value="ship"' in body
    assert f'action="/r/{d["token"]}/refill"' in body
    assert PHONE in page


def test_each_way_of_getting_it_says_what_it_holds_when_they_differ(app: Flask, client: FlaskClient,
                                                                   staff: dict) -> None:
    """A 14-day aqueous liquid: picked up it holds 14 days; shipped (2 days on the way) only what is still within its
    beyond-use date on the last day of use — so the parcel's price is for less, and the page says so."""
    from decimal import Decimal

    from pharmacy.compounding.rules import Form, UspCategory

    with app.test_request_context("/"):
        w = factories.world(staff, patient={"shipping_days": 2})
        f = factories.formula("LDN-SL-AQ", form=Form.SUBLINGUAL_LIQUID, strength="1",
                              category=UspCategory.AQUEOUS_UNPRESERVED, prices=(("45", 30, 6000), ("21", 14, 3500)))
        rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id,
                                    dose_mg=Decimal("1.5"), days_supply=30)
        token = links.make_token(links.REFILL, w["patient"].id, rx.id)
        from pharmacy.refills import services as refill_services

        s = refill_services.summary(rx)
        pickup, ship = s.options
        assert (pickup.quantity_text, pickup.days) == ("21 mL", 14) and s.quantity_text == "21 mL"
        assert ship.days < pickup.days and ship.quantity_text != pickup.quantity_text
        shipped = (ship.quantity_text, ship.days)
        db.session.commit()
    confirm(client, token)
    page = text(client.get(f"/r/{token}/refill"))
    assert f"Shipped, it holds {shipped[0]} ({shipped[1]}-day supply)" in page
    assert "Picked up, it holds" not in page  # what the page already says it holds


def test_one_click_requests_the_refill_and_confirms_date_and_price(app: Flask, client: FlaskClient,
                                                                  staff: dict) -> None:
    d = make(app, staff)
    confirm(client, d["token"])
    first = client.post(f"/r/{d['token']}/refill", data={"delivery": "ship"})
    assert first.status_code == 303 and first.headers["Location"].endswith(f"/r/{d['token']}/requested")
    second = client.post(f"/r/{d['token']}/refill", data={"delivery": "ship"})  # a double tap
    assert second.status_code == 303
    rows = requests_for(app, d["rx_id"])
    assert [(r.state, r.source, r.delivery_method) for r in rows] == [
        (RefillRequestState.OPEN, RequestSource.LINK, DeliveryMethod.SHIP)]
    page = text(client.get(f"/r/{d['token']}/requested"))
    assert "Thank you: we have your request" in page
    assert "We will ship it on Tuesday, December 15, 2026" in page  # not before too soon allows (the lead time: 25 Nov)
    assert "It should arrive by Thursday, December 17, 2026" in page
    assert "You have medicine until Tuesday, December 22, 2026, so we time this fill to reach you shortly" in page
    assert "Price: $63.95 (includes $8.95 shipping)" in page
    assert "We'll email you when it's ready" in page
    # Coming back shows the request instead of the button.
    page = text(client.get(f"/r/{d['token']}/refill"))
    assert "You have already asked for this refill" in page and "Yes, make my refill" not in page
    with app.app_context():
        kinds = db.session.execute(sa.select(OutboxMessage.kind).where(
            OutboxMessage.refill_request_id == rows[0].id)).scalars().all()
        assert kinds == [MessageKind.REQUEST_RECEIVED]


def test_the_confirmation_lasts_fifteen_minutes(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    d = make(app, staff)
    confirm(client, d["token"])
    clock.advance(timedelta(minutes=14))
    assert client.get(f"/r/{d['token']}/refill").status_code == 200
    clock.advance(timedelta(minutes=2))
    response = client.get(f"/r/{d['token']}/refill")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/r/{d['token']}")
    assert client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"}).status_code == 303
    assert requests_for(app, d["rx_id"]) == []


def test_a_confirmed_link_opens_nothing_of_another_patient(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff)
    assert confirm(client, d["other_token"], date(1950, 1, 2)).status_code == 303
    assert "Naltrexone" in text(client.get(f"/r/{d['other_token']}/refill"))
    for method, path in (("GET", ""), ("GET", "/refill"), ("GET", "/requested"), ("POST", "/refill")):
        response = client.open(f"/r/{d['token']}{path}", method=method, data={"delivery": "pickup"})
        assert response.status_code in (200, 303), (method, path)
        assert_shows_nothing_of_the_patient(text(response))
        if path:
            assert response.headers["Location"].endswith(f"/r/{d['token']}")
    # Their own birth date on this patient's link is simply wrong.
    response = confirm(client, d["token"], date(1950, 1, 2))
    assert response.status_code == 422 and "does not match" in text(response)
    assert requests_for(app, d["rx_id"]) == []


# ---- bad links: a friendly page, the pharmacy's phone, no data ---------------------------------------


def test_a_tampered_link_gets_a_friendly_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff)
    bad = d["token"][:-3] + ("xyz" if not d["token"].endswith("xyz") else "abc")
    for method, path in (("GET", ""), ("POST", ""), ("GET", "/refill"), ("POST", "/refill"), ("GET", "/requested")):
        data = {"month": "4", "day": "12", "year": "1968"} if method == "POST" else None
        response = client.open(f"/r/{bad}{path}", method=method, data=data)
        assert response.status_code == 400, (method, path)
        page = text(response)
        assert "This link does not work" in page and PHONE in page
        assert "Traceback" not in page
        assert_shows_nothing_of_the_patient(page.replace("(217) 555-0100", ""))
    # A swapped prescription is refused the same way.
    with app.test_request_context("/"):
        swapped = links.make_token(links.REFILL, d["patient_id"], d["other_rx_id"])
    response = confirm(client, swapped)
    assert response.status_code == 400 and "This link does not work" in text(response)


def test_an_expired_link_says_so(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    d = make(app, staff)
    clock.advance(timedelta(days=21, minutes=1))
    for response in (client.get(f"/r/{d['token']}"), confirm(client, d["token"])):
        assert response.status_code == 410
        page = text(response)
        assert "This link has expired" in page and "21 days" in page and PHONE in page
        assert_shows_nothing_of_the_patient(page)


def test_wrong_birth_dates_lock_the_link_across_requests(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff)
    for left in (4, 3, 2, 1):
        response = confirm(client, d["token"], date(1968, 12, 4))
        assert response.status_code == 422
        tries = "1 try" if left == 1 else f"{left} tries"
        assert f"That does not match. You have {tries} left on this link." in text(response)
    response = confirm(client, d["token"], date(1968, 12, 4))
    assert response.status_code == 429 and "This link is locked" in text(response)
    # Each refused request rolled back, yet every attempt was kept: a new browser finds the link locked.
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.sum(LinkGuard.failed_attempts))).scalar_one() == 5
        refused = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "link.dob_failed", AuditEvent.outcome == "denied")).scalar_one()
        assert refused == 5
    fresh = app.test_client()
    for response in (fresh.get(f"/r/{d['token']}"), confirm(fresh, d["token"])):
        assert response.status_code == 429
        page = text(response)
        assert "This link is locked" in page and PHONE in page
        assert_shows_nothing_of_the_patient(page)


def test_a_date_that_does_not_exist_is_a_form_error_not_an_attempt(app: Flask, client: FlaskClient,
                                                                  staff: dict) -> None:
    d = make(app, staff)
    response = client.post(f"/r/{d['token']}", data={"month": "2", "day": "31", "year": "1968"})
    assert response.status_code == 422 and "That date does not exist" in text(response)
    response = client.post(f"/r/{d['token']}", data={"month": "4"})
    assert response.status_code == 422 and "month, day and year" in text(response)
    with app.app_context():
        assert not db.session.execute(sa.select(sa.func.sum(LinkGuard.failed_attempts))).scalar_one()


def test_a_birth_date_in_the_future_is_invalid_not_an_attempt(app: Flask, client: FlaskClient, staff: dict) -> None:
    """Nobody is born tomorrow: such a date is a typing slip (or a probe), answered as invalid on the page and on
    the API, and never counted towards the five wrong dates that lock the link."""
    d = make(app, staff)
    tomorrow = date(2026, 11, 24)  # the fixed clock's today is 23 November 2026
    for _ in range(6):
        page = confirm(client, d["token"], tomorrow)
        assert page.status_code == 422 and "That date is in the future" in text(page)
        api = client.post("/api/v1/refill-requests", json={"token": d["token"], "date_of_birth": "2031-01-01"})
        assert api.status_code == 422 and "date_of_birth" in api.get_json()["errors"]["json"]
    with app.app_context():
        assert not db.session.execute(sa.select(sa.func.sum(LinkGuard.failed_attempts))).scalar_one()
    assert confirm(client, d["token"]).status_code == 303  # the right date still opens it


def test_a_used_link_is_spent_once_its_request_is_decided(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff)
    confirm(client, d["token"])
    client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"})
    req = requests_for(app, d["rx_id"])[0]
    with app.test_request_context("/"):
        refill_flow.decline(d["pharmacist"], req.id, "Your prescriber asked us to wait.")
        db.session.commit()
    # The browser that just used it is told plainly; it cannot ask again with this link.
    page = text(client.get(f"/r/{d['token']}/refill"))
    assert "This link has already been used" in page and "Yes, make my refill" not in page
    response = client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"})
    assert response.status_code == 410 and "already been used" in text(response)
    # Anyone replaying it later gets the used page before any question.
    replay = app.test_client()
    response = replay.get(f"/r/{d['token']}")
    assert response.status_code == 410
    page = text(response)
    assert "This link has already been used" in page and PHONE in page
    assert_shows_nothing_of_the_patient(page)
    assert confirm(replay, d["token"]).status_code == 410
    assert [r.state for r in requests_for(app, d["rx_id"])] == [RefillRequestState.DECLINED]


def test_the_birth_date_post_is_rate_limited_per_address(app: Flask, staff: dict) -> None:
    d = make(app, staff)
    with app.test_request_context("/"):
        tokens = [links.make_token(links.REFILL, d["patient_id"], d["rx_id"]) for _ in range(3)]
    client = app.test_client()
    statuses = [confirm(client, tokens[i // 4], date(2001, 1, 1)).status_code for i in range(10)]
    assert statuses == [422] * 10
    response = confirm(client, tokens[2], DOB)  # even the right date, from this address, this minute
    assert response.status_code == 429 and "This link is locked" not in text(response)
    elsewhere = app.test_client()
    response = elsewhere.post(f"/r/{tokens[2]}", data={"month": "4", "day": "12", "year": "1968"},
                              environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert response.status_code == 303


# ---- what the page says in the other states ---------------------------------------------------------


def test_no_refills_left_becomes_a_renewal_request(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff, refills_authorized=0)
    confirm(client, d["token"])
    page = text(client.get(f"/r/{d['token']}/refill"))
    assert "Your prescription needs a renewal" in page
    assert "No refills remain; we will ask your prescriber for a renewal." in page
    assert "we will contact Dr. Elena Marquez, MD for you" in page
    assert "Refills left 0" in page
    response = client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"})
    assert response.status_code == 303
    page = text(client.get(f"/r/{d['token']}/requested"))
    assert "we are asking your prescriber, Dr. Elena Marquez, MD, for a new one" in page
    assert [r.state for r in requests_for(app, d["rx_id"])] == [RefillRequestState.AWAITING_RENEWAL]
    with app.app_context():
        kinds = db.session.execute(sa.select(OutboxMessage.kind).where(
            OutboxMessage.prescription_id == d["rx_id"], OutboxMessage.refill_request_id.is_not(None))).scalars()
        assert list(kinds) == [MessageKind.RENEWAL_IN_PROGRESS]


def test_a_fill_in_progress_is_shown_instead_of_the_button(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff, dispensed=False, in_progress=True)
    confirm(client, d["token"])
    response = client.get(f"/r/{d['token']}/refill")
    page = text(response)
    assert "Your refill is already on its way" in page
    assert "We have your order and will start making it soon" in page
    assert f'action="/r/{d["token"]}/refill"' not in response.get_data(as_text=True)
    response = client.post(f"/r/{d['token']}/refill", data={"delivery": "pickup"})
    assert response.status_code == 409 and "already being prepared" in text(response) and PHONE in text(response)


def test_no_address_on_file_offers_pick_up_only(app: Flask, client: FlaskClient, staff: dict) -> None:
    d = make(app, staff, dispensed=False, patient={"address_line1": None, "city": None, "state": None, "postal_code": None,
                                  "delivery_preference": DeliveryMethod.SHIP})
    confirm(client, d["token"])
    response = client.get(f"/r/{d['token']}/refill")
    body = response.get_data(as_text=True)
    assert re.search(r'value="pickup"\s+checked', body) and re.search(r'value="ship"\s+disabled', body)
    assert "We have no address on file for you" in text(response)


def test_patient_pages_carry_and_require_a_csrf_token(app_config: dict, clock: Any, staff: dict) -> None:
    csrf_app = create_app({**app_config, "WTF_CSRF_ENABLED": True}, clock=clock)
    try:
        d = make(csrf_app, staff)
        client = csrf_app.test_client()
        page = client.get(f"/r/{d['token']}").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        forged = client.post(f"/r/{d['token']}", data={"month": "4", "day": "12", "year": "1968"})
        assert forged.status_code == 400
        ok = client.post(f"/r/{d['token']}", data={"month": "4", "day": "12", "year": "1968", "csrf_token": token})
        assert ok.status_code == 303
    finally:
        with csrf_app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_a_titration_plan_shows_the_next_step(app: Flask, client: FlaskClient, staff: dict) -> None:
    with app.test_request_context("/"):
        f = factories.formula("LDN-CAP-1.5", strength="1.5")
        w = factories.world(staff)
        rx = factories.second_prescription(w["pharmacist"], w["patient"].id, f.id, w["prescriber"].id,
                                    titration=[{"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 28}])
        order = order_flow.start_fill(w["pharmacist"], rx.id)
        factories.run_order_to(dict(w, formula=f), order.id, "dispensed")
        token = links.make_token(links.REFILL, w["patient"].id, rx.id)
        db.session.commit()
    confirm(client, token)
    page = text(client.get(f"/r/{token}/refill"))
    # 30 days dispensed: 14 at 1.5 mg and 16 of the 28 at 3 mg; the next fill finishes the 3 mg step.
    assert "Your dose plan: Next fill continues at 3 mg a day, then 4.5 mg." in page
    assert "78 capsules (30-day supply)" in page  # 12 days × 2 capsules + 18 days × 3 capsules
