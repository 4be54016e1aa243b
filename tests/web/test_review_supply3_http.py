"""Third supply review, over HTTP: what the API, the staff pages and the patient's refill link say about the days a
patient holds, after histories built through the public services with the injected clock. Each test fails on the
code it was written against, for the reason in its docstring."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core import links
from pharmacy.core import services as core_services
from pharmacy.core.context import today
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import prescription_changes
from tests import factories
from tests.conftest import login
from tests.pages import confirm_birth_date
from tests.pages import page_text as text

DOB = date(1968, 4, 12)



def _api(staff: dict) -> dict[str, str]:
    _, raw = core_services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "tests")
    return {"Authorization": f"Bearer {raw}"}


def _timeline_line(page: str) -> str:
    return page.split("Supply and next order")[1].split("Payments")[0]


def test_a_new_dose_handed_over_while_the_old_refill_travels_is_shown_as_held_everywhere(
        app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """Out of medicine since Dec 23; the refill shipped Dec 28 arrives Jan 1 (4 days on the road). On Dec 29 the dose
    is changed (a replacement carrying the supply) and the new strength is handed over at the counter. A day-by-day
    count: Dec 29 – Jan 27 from the bottle in hand, the parcel's 30 days from Jan 28 (it arrives while the bottle
    lasts, so it adds its days — docs/domain.md, Supply and refills): 60 days on hand, last dose Feb 26, not out.

    What the surfaces say on Dec 29, right after the hand-over: the API `out_since` 2026-12-23, `days_on_hand` 0,
    `arriving_on` 2027-01-01, run-out 2027-03-01; the staff patient page "Out of medicine since Dec 23, 2026: the refill
    on its way arrives Jan 1"; the patient's refill link "Your refill is on its way … (7 days without it)" — to a
    patient holding a month of medicine, and a run-out three days too late (days in transit counted as held).

    Cause: supply/rules.supply (covered_spans with `carried_run_out`, latest_span) always counts the carried supply
    before the replacement's dispensings, though the carried span (covered_from Jan 1) starts after the replacement's
    first fill reached the patient (Dec 29)."""
    with app.test_request_context("/"):
        w = factories.world(staff, patient={"shipping_days": 4, "delivery_preference": "ship"})
        factories.fill_now(w, w["rx"].id)  # Nov 23 – Dec 22
        clock.advance(timedelta(days=35))
        factories.fill_now(w, w["rx"].id, ship=True)  # Dec 28, arrives Jan 1
        clock.advance(timedelta(days=1))
        new = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
        factories.fill_now(w, new.id, too_soon_reason="The parcel is late; the new dose starts now")
        assert today() == date(2026, 12, 29)
        ids = {"rx": new.id, "patient": w["patient"].id}
        token = links.make_token(links.REFILL, ids["patient"], ids["rx"])
        api = _api(staff)
        db.session.commit()

    wrong = []
    supply = client.get(f"/api/v1/prescriptions/{ids['rx']}", headers=api).get_json()["supply"]
    seen = {k: supply[k] for k in ("out_since", "days_on_hand", "arriving_on", "days_without_ahead", "run_out_date")}
    if seen != {"out_since": None, "days_on_hand": 60, "arriving_on": None, "days_without_ahead": 0,
                "run_out_date": "2027-02-26"}:
        wrong.append(f"API supply: {seen}")

    login(client, staff["pharmacist"])
    line = _timeline_line(text(client.get(f"/patients/{ids['patient']}")))
    if "Out of medicine" in line or "60 days on hand" not in line:
        wrong.append(f"patient page: {line.strip()[:200]}")

    client.post("/logout")
    confirm_birth_date(client, token, DOB)
    page = text(client.get(f"/r/{token}/refill"))
    if "without it" in page or "About 60 days" not in page:
        wrong.append(f"refill link: {page[page.find('Your'):][:200]}")
    assert not wrong, "\n".join(wrong)


def test_the_renewals_fill_says_when_its_supply_ends_once_the_old_lost_parcel_is_returned(
        app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """A 30-day fill handed over Nov 23; the refill shipped Dec 17 (due Dec 19); a renewal on Dec 20 carries that
    supply to Jan 21; the renewal's first fill is handed over on Jan 16, counted after it (to Feb 20). The December
    parcel is then confirmed lost and returned (docs/domain.md, Returned fills: "A replacement prescription carrying the
    returned supply … loses the returned days too"). The patient page rightly says 30 days on hand, runs out Feb 14. The
    renewal's own fill still says "supply lasts through Feb 20, 2027" on its order page and "Feb 20, 2027" under "Runs
    out" on the prescription page: six days the patient never had, shown to the pharmacist who answers the patient's
    call. (A return of the same prescription's fill cannot leave this behind: only its latest fill may be returned.)
    Right: the fill's run-out follows the recomputed supply, Feb 14.

    Cause: workflows/orders.dispense stores Order.run_out_date once, when the fill is dispensed; workflows/orders.
    return_fill (supply/services.refresh_with_successors) recomputes the successors' supply but not the run-out kept
    on their fills."""
    with app.test_request_context("/"):
        w = factories.world(staff, patient={"shipping_days": 2})
        factories.fill_now(w, w["rx"].id)
        clock.advance(timedelta(days=24))
        lost = factories.fill_now(w, w["rx"].id, ship=True)
        clock.advance(timedelta(days=3))
        renewal = prescription_changes.replace(w["pharmacist"], w["rx"].id, factories.replacement_data(w))
        clock.advance(timedelta(days=27))
        filled = factories.fill_now(w, renewal.id)
        assert filled.run_out_date == date(2027, 2, 20)
        order_flow.return_fill(w["pharmacist"], lost.id, "lost_in_transit")
        ids = {"rx": renewal.id, "patient": w["patient"].id, "order": filled.id}
        db.session.commit()
    with app.app_context():
        assert db.session.get(Prescription, ids["rx"]).latest_run_out_date == date(2027, 2, 14)

    login(client, staff["pharmacist"])
    line = _timeline_line(text(client.get(f"/patients/{ids['patient']}")))
    assert "30 days on hand" in line and "runs out Feb 14, 2027" in line, line  # the patient page is right
    wrong = []
    order_page = text(client.get(f"/orders/{ids['order']}"))
    if "supply lasts through Feb 14, 2027" not in order_page:
        at = order_page.find("supply lasts through")
        wrong.append(f"order page: {order_page[at:at + 40]}")
    fills = text(client.get(f"/prescriptions/{ids['rx']}")).split("Fills")[-1]
    if "Feb 20, 2027" in fills:
        wrong.append(f"prescription page, Fills: {fills[:300]}")
    assert not wrong, "\n".join(wrong)
