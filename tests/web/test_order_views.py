"""The compounding pages over HTTP: the queue, the order page and its next steps (intake → dispensed in the
browser), refusals shown in words, labels and records, formulas, ingredient lots and lot recall."""
from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader

from pharmacy.compounding import services as orders
from pharmacy.compounding.models import Formula, IngredientLot, Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.conftest import login
from tests.pages import build, field_error, labels_cover_inputs, queries, run, text


def as_user(client: FlaskClient, who: Any) -> None:
    client.post("/logout")
    login(client, who)


def state_of(app: Flask, order_id: int) -> OrderState:
    with app.app_context():
        return db.session.get(Order, order_id).state


def new_order(app: Flask, staff: dict, **kw: Any) -> tuple[dict[str, Any], int]:
    w = build(app, staff, **kw)
    order_id = run(app, lambda: order_flow.start_fill(factories.actor(staff["technician"]), w["rx"]).id)
    return w, order_id


def _selected_lots(form: str) -> list[str]:
    return [re.search(r'<option value="(\d+)" selected>', s).group(1)  # type: ignore[union-attr]
            for s in form.split('name="lot_id"')[1:]]


def plan_form(body: str) -> dict[str, Any]:
    """What the order page's "Plan the batch" form sends as offered (the pre-selected lots)."""
    form = body.split('<input type="hidden" name="to" value="plan_batch">', 1)[1].split("</form>", 1)[0]
    return {"to": "plan_batch", "lot_id": _selected_lots(form)}


def compound_form(body: str) -> dict[str, Any]:
    """The compounding form filled as a careful technician would: the planned lots, and the measured amounts
    equal to the expected ones shown under each box (the form itself leaves them empty)."""
    form = body.split('<input type="hidden" name="to" value="compounding">', 1)[1].split("</form>", 1)[0]
    assert re.findall(r'name="lot_qty" type="text" inputmode="decimal" required value="([^"]*)"', form) == \
        ["", ""], "measured amounts are never pre-filled"
    expected = re.findall(r'>expected ([\d.]+) (?:mg|g|mL)</span>', form)
    made = re.search(r"<strong>Make (\d+(?:\.\d+)?) (?:capsules|mL)</strong>", form).group(1)  # type: ignore[union-attr]
    return {"to": "compounding", "lot_id": _selected_lots(form), "lot_qty": expected, "quantity_made": made}


def text_of(body: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def planned(client: FlaskClient, order_id: int) -> str:
    """Plan the batch with the lots the page offers; the order page that follows (with the compounding form)."""
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert client.post(f"/orders/{order_id}/transitions", data=plan_form(page)).status_code == 302
    return client.get(f"/orders/{order_id}").get_data(as_text=True)


def test_intake_to_dispensed_in_the_browser(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["technician"])
    started = client.post(f"/prescriptions/{w['rx']}/fills", data={"delivery": "pickup"})
    order_id = int(started.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/orders/{order_id}")
    assert "Fill started: order" in text(page) and "Verify: a pharmacist's step." in text(page)
    as_user(client, staff["pharmacist"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert ">Verify</button>" in page
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "verified"}).status_code == 302
    assert "Verified: choose the lots for the batch." in text(client.get(f"/orders/{order_id}"))
    as_user(client, staff["technician"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    labels_cover_inputs(page)
    assert "Compounding: choose the lots first" in page and 'value="compounding"' not in page
    page = planned(client, order_id)
    assert "Batch planned: make 30 capsules for 30 days." in text_of(page)
    labels_cover_inputs(page)
    form = compound_form(page)
    assert form["lot_qty"] == ["135", "4.2"] and form["quantity_made"] == "30"  # 4.5 mg × 30; 14 g per 100
    done = client.post(f"/orders/{order_id}/transitions", data=form)
    assert done.status_code == 302
    page = text(client.get(f"/orders/{order_id}"))
    assert "Compounding recorded: lot L261123-001, BUD May 22, 2027." in page  # 180 days after Nov 23, 2026
    assert "Final check: a pharmacist's step." in page
    as_user(client, staff["pharmacist2"])
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "checked", "qc_notes": "10 weighed, in range"}
                       ).status_code == 302
    assert "Final check passed" in text(client.get(f"/orders/{order_id}"))
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "ready"}).status_code == 302
    as_user(client, staff["technician"])
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                "bag_code": bag(app, order_id)}
                       ).status_code == 302
    page = text(client.get(f"/orders/{order_id}"))
    assert "Dispensed." in page and "Final: nothing more to do." in page
    assert "Checked Nov 23, 2026 9:00 AM by Peter Pharmacist" in page
    assert state_of(app, order_id) == OrderState.DISPENSED


def test_a_move_out_of_order_is_refused_in_words(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    login(client, staff["pharmacist"])
    response = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                    "bag_code": bag(app, order_id)})
    assert response.status_code == 409
    assert ("An order that is only requested cannot be dispensed; it must be verified, compounded, checked and "
            "made ready first.") in text(response)
    assert state_of(app, order_id) == OrderState.REQUESTED


def test_a_technician_cannot_verify_and_a_compounder_cannot_check(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    login(client, staff["technician"])
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "verified"}).status_code == 403
    as_user(client, staff["pharmacist"])
    client.post(f"/orders/{order_id}/transitions", data={"to": "verified"})
    page = planned(client, order_id)
    assert client.post(f"/orders/{order_id}/transitions", data=compound_form(page)).status_code == 302
    page = text(client.get(f"/orders/{order_id}"))
    assert "another pharmacist must check the batch you compounded" in page
    refused = client.post(f"/orders/{order_id}/transitions", data={"to": "checked"})
    assert refused.status_code == 403
    assert state_of(app, order_id) == OrderState.COMPOUNDING


def test_an_expired_lot_is_refused_and_the_form_re_shown(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    expired = run(app, lambda: factories.lot("Naltrexone hydrochloride USP", "OLD-9",
                                             expiry=today() - timedelta(days=3)).id)
    run(app, lambda: orders.verify_order(factories.actor(staff["pharmacist"]), order_id))
    login(client, staff["technician"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert "OLD-9" not in page  # not offered
    form = compound_form(planned(client, order_id))
    form["lot_id"][0] = str(expired)
    response = client.post(f"/orders/{order_id}/transitions", data=form)
    assert response.status_code == 422
    body = text(response)
    assert "The compounding record was not saved." in body
    assert "Expired lot(s) cannot be used: Naltrexone hydrochloride USP lot OLD-9" in body
    assert state_of(app, order_id) == OrderState.VERIFIED


def test_bad_numbers_in_the_compounding_form_are_422(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    run(app, lambda: orders.verify_order(factories.actor(staff["pharmacist"]), order_id))
    login(client, staff["technician"])
    form = compound_form(planned(client, order_id))
    response = client.post(f"/orders/{order_id}/transitions", data={**form, "quantity_made": "-3"})
    assert response.status_code == 422 and "Must be at least 0.001." in text(response)
    response = client.post(f"/orders/{order_id}/transitions", data={**form, "lot_qty": ["abc", "1"]})
    assert response.status_code == 422 and "Enter a number, e.g. 4.5." in text(response)
    assert state_of(app, order_id) == OrderState.VERIFIED


def test_each_line_of_the_compounding_record_is_flagged_beside_its_box(app: Flask, client: FlaskClient,
                                                                      staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    run(app, lambda: orders.verify_order(factories.actor(staff["pharmacist"]), order_id))
    login(client, staff["technician"])
    form = compound_form(planned(client, order_id))
    # Sent with every measured box empty: both lines are named, and each message sits beside its own box.
    response = client.post(f"/orders/{order_id}/transitions", data={**form, "lot_qty": ["", ""]})
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Line 1: enter the quantity used" in text(response) and "Line 2: enter the quantity used" in text(response)
    for i in (0, 1):
        assert re.search(rf'id="rec-qty-{i}"[^>]*aria-invalid="true" aria-describedby="lots-{i}-quantity_used-error"',
                         body)
        assert f'<p class="error" id="lots-{i}-quantity_used-error">' in body
    # A box that is not a number: its line is named too, beside the box and in the summary.
    response = client.post(f"/orders/{order_id}/transitions", data={**form, "lot_qty": [form["lot_qty"][0], "abc"]})
    body = response.get_data(as_text=True)
    assert response.status_code == 422 and "Line 2: Enter a number, e.g. 4.5." in text(response)
    assert '<p class="error" id="lots-1-quantity_used-error">' in body and 'id="lots-0-quantity_used-error"' not in body
    assert state_of(app, order_id) == OrderState.VERIFIED


def test_a_failed_quality_check_is_kept_and_offers_a_re_make(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    run(app, lambda: orders.verify_order(factories.actor(staff["pharmacist"]), order_id))
    login(client, staff["technician"])
    form = compound_form(planned(client, order_id))
    client.post(f"/orders/{order_id}/transitions", data={**form, "quantity_made": "27"})
    as_user(client, staff["pharmacist"])
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "checked"}).status_code == 302
    page = text(client.get(f"/orders/{order_id}"))
    assert "Quality check failed: yield 90.0% is outside 95–105%." in page
    assert "Re-make or correct the batch" in page
    with app.app_context():
        order = db.session.get(Order, order_id)
        assert (order.state, order.qc_passed, order.checked_by_id) == (OrderState.COMPOUNDING, False,
                                                                       staff["pharmacist"].id)


def test_too_soon_needs_a_pharmacists_reason_on_the_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)

    def two_fills() -> int:
        wr = {"pharmacist": factories.actor(staff["pharmacist"]), "pharmacist2": factories.actor(staff["pharmacist2"]),
              "technician": factories.actor(staff["technician"]),
              "formula": db.session.get(Formula, w["formula"])}
        first = order_flow.start_fill(wr["technician"], w["rx"])
        factories.run_order_to(wr, first.id, "dispensed")
        refill = order_flow.start_fill(wr["technician"], w["rx"])
        factories.run_order_to(wr, refill.id, "ready")
        return refill.id

    order_id = run(app, two_fills)
    login(client, staff["technician"])
    page = text(client.get(f"/orders/{order_id}"))
    assert "too soon today" in page and "a pharmacist may override with a reason" in page
    refused = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                   "bag_code": bag(app, order_id)})
    assert refused.status_code == 409 and "Too soon to dispense: the earliest day the patient may have it is " \
        "2026-12-17." in text(refused)
    as_user(client, staff["pharmacist"])
    body = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert 'name="too_soon_reason"' in body
    missing = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                   "bag_code": bag(app, order_id)})
    assert missing.status_code == 422
    assert field_error(missing.get_data(as_text=True), "too_soon_reason") == (
        "A pharmacist's reason (3–400 characters) is needed to dispense early.")
    ok = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                              "bag_code": bag(app, order_id),
                                                             "too_soon_reason": "Leaving for 6 weeks abroad"})
    assert ok.status_code == 302
    assert "Too-soon override Paula Pharmacist: “Leaving for 6 weeks abroad”" in text(client.get(f"/orders/{order_id}"))


def test_shipping_needs_a_carrier_and_tracking(app: Flask, client: FlaskClient, staff: dict) -> None:
    w, order_id = new_order(app, staff)

    def walk() -> None:
        wr = {"pharmacist": factories.actor(staff["pharmacist"]), "pharmacist2": factories.actor(staff["pharmacist2"]),
              "technician": factories.actor(staff["technician"]),
              "formula": db.session.get(Formula, w["formula"])}
        factories.run_order_to(wr, order_id, "ready")

    run(app, walk)
    login(client, staff["technician"])
    response = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "ship",
                                                                    "bag_code": bag(app, order_id)})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert field_error(body, "carrier") == "Enter the carrier."
    assert field_error(body, "tracking_number") == "Enter the tracking number."
    bad = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "ship",
                                                               "bag_code": bag(app, order_id), "carrier": "UPS",
                                                              "tracking_number": "<b>"})
    assert bad.status_code == 422
    ok = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "ship",
                                                              "bag_code": bag(app, order_id), "carrier": "UPS",
                                                             "tracking_number": "1Z999AA10123456784"})
    assert ok.status_code == 302
    assert "ship · UPS 1Z999AA10123456784" in text(client.get(f"/orders/{order_id}"))


def test_hold_resume_and_cancel_on_the_order_page(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    login(client, staff["technician"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert ">Put on hold</button>" in page and "Cancel order" not in page  # a technician holds, never cancels
    no_reason = client.post(f"/orders/{order_id}/transitions", data={"to": "on_hold"})
    assert no_reason.status_code == 422 and "Say why (at least a few words)." in text(no_reason)
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "on_hold", "reason": "Patient away"}
                       ).status_code == 302
    page = text(client.get(f"/orders/{order_id}"))
    assert "On hold since Nov 23, 2026 9:00 AM (held while requested): Patient away" in page
    assert "Resume (requested)" in page
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "resume"}).status_code == 302
    assert state_of(app, order_id) == OrderState.REQUESTED
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "cancelled", "reason": "x y"}
                       ).status_code == 403
    as_user(client, staff["pharmacist"])
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert 'data-confirm="Cancel order' in page
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "cancelled", "reason": "Dose changed"}
                       ).status_code == 302
    assert "Cancelled Dose changed" in text(client.get(f"/orders/{order_id}"))


def test_a_step_field_from_another_step_is_refused(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff)
    login(client, staff["pharmacist"])
    response = client.post(f"/orders/{order_id}/transitions", data={"to": "verified", "carrier": "UPS"})
    assert response.status_code == 422 and "Not used when moving to verified." in text(response)
    assert client.post(f"/orders/{order_id}/transitions", data={"to": "sideways"}).status_code == 422
    assert state_of(app, order_id) == OrderState.REQUESTED


def test_the_queue_groups_by_state_with_counts_oldest_first(app: Flask, client: FlaskClient, staff: dict,
                                                             clock: Any) -> None:
    w = build(app, staff)

    def three() -> list[int]:
        ph = factories.actor(staff["pharmacist"])
        ids = []
        for i in range(3):
            p = factories.patient(ph, first_name="Q", last_name=f"Queue{i}", email=f"q{i}@example.com")
            rx = factories.prescription(ph, p.id, w["formula"], w["prescriber"])
            ids.append(order_flow.start_fill(ph, rx.id).id)
            clock.advance(timedelta(minutes=10))
        orders.verify_order(ph, ids[1])
        return ids

    run(app, three)
    login(client, staff["technician"])
    with queries(app) as seen:
        page = client.get("/orders")
    body = text(page)
    assert "2 Requested 1 Verified 0 Compounding" in body
    requested = body.split("Requested 2", 1)[1].split("Verified 1", 1)[0]
    assert requested.index("Queue0") < requested.index("Queue2") and "Queue1" not in requested
    assert len(seen) <= 6  # the session user, counts, the orders with their prescriptions: not one per order


def test_the_queue_board_shows_each_step_oldest_ten_and_pages_a_step_fifty_at_a_time(
        app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """51 orders to verify: the board shows every step's count and its oldest 10, with a link to the step's list;
    that list has the oldest 50 with a link to page 2, and page 2 the 51st alone (saying which of the 51 it shows),
    in the same number of statements."""
    w = build(app, staff)

    def fifty_two() -> list[int]:
        ph = factories.actor(staff["pharmacist"])
        ids = []
        for i in range(52):
            p = factories.patient(ph, first_name="Q", last_name=f"Page{i:02d}", email=f"page{i}@example.com")
            rx = factories.prescription(ph, p.id, w["formula"], w["prescriber"])
            ids.append(order_flow.start_fill(ph, rx.id).id)
            clock.advance(timedelta(minutes=1))
        orders.verify_order(ph, ids[0])  # one in another state: its own count, its own list
        return ids

    ids = run(app, fifty_two)
    waiting = ids[1:]  # 51 requested, oldest first
    login(client, staff["technician"])

    def listed(response: Any) -> list[int]:
        return [int(x) for x in re.findall(r'href="/orders/(\d+)">Order', response.get_data(as_text=True))]

    with queries(app) as board_seen:
        board = client.get("/orders")
    assert board.status_code == 200
    assert listed(board) == [*waiting[:10], ids[0]]  # every step's oldest ten, requested before verified
    assert "51 Requested 1 Verified" in text(board) and "Requested 51" in text(board)
    assert "Showing the oldest 10 of 51. All 51 requested orders, 50 a page" in text(board)
    assert 'href="/orders?state=requested">All 51 requested orders' in board.get_data(as_text=True)
    assert "state=verified" not in board.get_data(as_text=True)  # all of it shown: no link

    with queries(app) as first_seen:
        first = client.get("/orders?state=requested")
    assert first.status_code == 200
    assert listed(first) == waiting[:50]  # one step: 50 a page
    assert "Showing the oldest 50 of 51." in text(first)
    assert 'href="/orders?state=requested&amp;page=2#requested" rel="next">Page 2<' in first.get_data(as_text=True)

    with queries(app) as second_seen:
        second = client.get("/orders?state=requested&page=2")
    assert second.status_code == 200
    assert listed(second) == waiting[50:]
    assert "Requested 51 page 2 of 2" in text(second) and "Showing 51–51 of 51, oldest first." in text(second)
    assert 'href="/orders?state=requested&amp;page=1#requested" rel="prev">Page 1<' in second.get_data(as_text=True)
    assert len(second_seen) == len(first_seen) == len(board_seen)

    assert listed(client.get("/orders?state=requested&page=9")) == waiting[50:]  # past the end: the last page
    assert client.get("/orders?state=dispensed").status_code == 404  # not a step of the queue


def test_the_order_page_stays_within_a_fixed_number_of_queries(app: Flask, client: FlaskClient, staff: dict) -> None:
    _w, order_id = new_order(app, staff, patient={"conditions": ["ms", "cirrhosis"], "medications": ["Avonex"]})
    login(client, staff["pharmacist"])
    with queries(app) as seen:
        assert client.get(f"/orders/{order_id}").status_code == 200
    assert len(seen) <= 16


def test_label_and_compounding_record(app: Flask, client: FlaskClient, staff: dict) -> None:
    w, order_id = new_order(app, staff)
    login(client, staff["pharmacist"])
    early = client.get(f"/orders/{order_id}/label.pdf")
    assert early.status_code == 409 and "printed once the order has been compounded" in text(early)
    assert client.get(f"/orders/{order_id}/record").status_code == 409

    def walk() -> None:
        wr = {"pharmacist": factories.actor(staff["pharmacist"]), "pharmacist2": factories.actor(staff["pharmacist2"]),
              "technician": factories.actor(staff["technician"]),
              "formula": db.session.get(Formula, w["formula"])}
        factories.run_order_to(wr, order_id, "checked")

    run(app, walk)
    page = client.get(f"/orders/{order_id}").get_data(as_text=True)
    assert f'href="/orders/{order_id}/label.pdf?stock=4x6"' in page and 'stock=2x4' in page
    assert f'href="/orders/{order_id}/record"' in page
    label = client.get(f"/orders/{order_id}/label.pdf")
    assert label.status_code == 200 and label.mimetype == "application/pdf"
    content = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(label.data)).pages).replace("\u00a0", " ")
    label.close()
    assert "Naltrexone 4.5 mg capsules" in content and "Margaret Ellison" in content
    assert "Do not take with opioid pain medicines." in content and "Lot: L261123-001" in content
    record = text(client.get(f"/orders/{order_id}/record"))
    assert "Compounding record · batch L261123-001" in record
    assert re.search(r"\(LDN-CAP-4\.5\)\s*,\s*version 1", record)  # the version it was made with (orders keep theirs)
    assert "Naltrexone hydrochloride USP Medisca NAL-1" in record and "Checked Peter Pharmacist" in record
    assert "100% (95–105% passes): passed" in record
    pdf = client.get(f"/orders/{order_id}/record.pdf")
    assert pdf.mimetype == "application/pdf" and b"%PDF" in pdf.data[:8]
    assert "(LDN-CAP-4.5), version 1" in "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    pdf.close()


def test_formulas_and_the_master_formulation_record(app: Flask, client: FlaskClient, staff: dict) -> None:
    w = build(app, staff)
    login(client, staff["technician"])
    listing = text(client.get("/formulas"))
    assert "Naltrexone 4.5 mg capsules LDN-CAP-4.5 Other non-aqueous (capsules, non-aqueous topicals) 180 days" in listing
    record = text(client.get(f"/formulas/{w['formula']}"))
    assert "Naltrexone hydrochloride USP hydrochloride 450 mg 100 capsules yes" in record
    assert "180 days from compounding, never after the earliest ingredient expiry" in record
    assert client.get("/formulas/424242").status_code == 404


def test_receiving_a_lot_in_the_dashboard(app: Flask, client: FlaskClient, staff: dict) -> None:
    build(app, staff)
    login(client, staff["technician"])
    page = client.get("/lots").get_data(as_text=True)
    labels_cover_inputs(page)
    expired = client.post("/lots", data={"ingredient_name": "Naltrexone hydrochloride USP", "supplier": "PCCA",
                                         "lot_number": "P-9", "expiry_date": "2026-11-01"})
    assert expired.status_code == 422
    assert field_error(expired.get_data(as_text=True), "expiry_date") == (
        "This lot has already expired: it cannot be received into stock.")
    ok = client.post("/lots", data={"ingredient_name": "Naltrexone hydrochloride USP", "supplier": "PCCA",
                                    "lot_number": "P-9", "expiry_date": "2028-03-01"})
    assert ok.status_code == 302
    assert "Naltrexone hydrochloride USP lot P-9 received." in text(client.get("/lots"))
    with app.app_context():
        assert db.session.execute(sa.select(IngredientLot).where(IngredientLot.lot_number == "P-9")).scalar_one()


def test_lot_recall_page_and_csv(app: Flask, client: FlaskClient, staff: dict) -> None:
    w, order_id = new_order(app, staff)

    def walk() -> None:
        wr = {"pharmacist": factories.actor(staff["pharmacist"]), "pharmacist2": factories.actor(staff["pharmacist2"]),
              "technician": factories.actor(staff["technician"]),
              "formula": db.session.get(Formula, w["formula"])}
        factories.run_order_to(wr, order_id, "dispensed")

    run(app, walk)
    login(client, staff["pharmacist"])
    empty = client.get("/recall")
    assert empty.status_code == 200 and "Ingredient lot number" in text(empty)
    both = client.get("/recall?ingredient_lot=NAL-1&order_lot=L261123-001")
    assert both.status_code == 422 and "one of them" in text(both)
    page = text(client.get("/recall?ingredient_lot=nal-1"))
    assert "1 order, 1 patient" in page and "Ellison, Margaret" in page and "with the patient" in page
    assert "(217) 555-0101" in page
    by_batch = text(client.get("/recall?order_lot=L261123-001"))
    assert "1 order, 1 patient" in by_batch
    download = client.get("/recall.csv?ingredient_lot=NAL-1")
    assert download.mimetype == "text/csv"
    assert download.headers["Content-Disposition"] == 'attachment; filename="recall-NAL-1.csv"'
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [(r["order_id"], r["patient"], r["reached_patient"]) for r in rows] == [
        (str(order_id), "Ellison, Margaret", "yes")]
    assert client.get("/recall.csv").status_code == 422
    # A control character in the address is a field error on the page and its CSV, never a database error (a NUL
    # reached PostgreSQL, which refuses it).
    for url in ("/recall?ingredient_lot=NAL%00-1", "/recall?order_lot=L261123%1B", "/recall.csv?ingredient_lot=%00A"):
        refused = client.get(url)
        assert refused.status_code == 422 and "not allowed" in text(refused), url


def bag(app: Flask, order_id: int) -> str:
    """The code on the order's bag label, as the counter scans it before dispensing."""
    from pharmacy.compounding.rules import bag_code

    with app.app_context():
        order = db.session.get(Order, order_id)
        return bag_code(order.prescription.rx_number, order.fill_number)


def test_the_wrong_bag_is_refused_and_the_page_form_asks_for_the_scan(app: Flask, client: FlaskClient, staff: dict) -> None:
    w, order_id = new_order(app, staff)

    def walk() -> None:
        wr = {"pharmacist": factories.actor(staff["pharmacist"]), "pharmacist2": factories.actor(staff["pharmacist2"]),
              "technician": factories.actor(staff["technician"]), "formula": db.session.get(Formula, w["formula"])}
        factories.run_order_to(wr, order_id, "ready")

    run(app, walk)
    login(client, staff["technician"])
    missing = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup"})
    assert missing.status_code == 422 and "Scan the barcode on the bag" in text(missing)
    wrong = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                 "bag_code": "RX999999-00"})
    assert wrong.status_code == 422 and "not this order's bag" in text(wrong)
    assert state_of(app, order_id) == OrderState.READY
    right = client.post(f"/orders/{order_id}/transitions", data={"to": "dispensed", "method": "pickup",
                                                                 "bag_code": bag(app, order_id).lower()})
    assert right.status_code == 302 and state_of(app, order_id) == OrderState.DISPENSED
