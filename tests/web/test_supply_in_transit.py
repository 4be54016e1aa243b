"""A refill that is still on its way is not medicine in hand: what the API, the staff patient page and the patient's
refill link say while a parcel travels — after the patient ran out, and when the bottle in hand runs out before it
arrives. (A parcel's days count from its arrival; before, the days in transit were counted as held.)"""
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
from tests import factories
from tests.conftest import login
from tests.pages import confirm_birth_date
from tests.pages import page_text as text
from tests.portal_helpers import sign_in as portal_sign_in

DOB = date(1968, 4, 12)


def _ship(app: Flask, staff: dict, clock: Any, *, days_after_run_out: int) -> dict[str, Any]:
    """A shipped 30-day first fill; the clock moved to `days_after_run_out` days after it runs out (negative: before)
    and the refill dispensed that day, shipped (4 days on the road). Committed; ids, the token and dates."""
    with app.test_request_context("/"):
        shipped = factories.refill_shipped(staff, clock, days_after_run_out=days_after_run_out)
        rx_id, patient_id, run_out, arrives = (shipped[k] for k in ("rx_id", "patient_id", "run_out", "arrives"))
        _, raw = core_services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "tests")
        token = links.make_token(links.REFILL, patient_id, rx_id)
        db.session.commit()
    return {"rx_id": rx_id, "patient_id": patient_id, "run_out": run_out, "arrives": arrives, "token": token,
            "api": {"Authorization": f"Bearer {raw}"}}


def test_out_of_medicine_while_the_refill_travels(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    """Ran out 3 days ago; the refill left today and arrives in 4 days: the patient holds nothing until it comes."""
    d = _ship(app, staff, clock, days_after_run_out=3)
    with app.app_context():
        day = today()
    assert d["arrives"] > day
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["days_on_hand"] == 0
    assert supply["out_since"] == (d["run_out"] + timedelta(days=1)).isoformat()
    assert supply["arriving_on"] == d["arrives"].isoformat()
    assert supply["days_without_ahead"] == (d["arrives"] - day).days
    assert supply["run_out_date"] == (d["arrives"] + timedelta(days=29)).isoformat()

    login(client, staff["pharmacist"])
    page = text(client.get(f"/patients/{d['patient_id']}"))
    assert "Out of medicine since" in page and "the refill on its way arrives" in page
    assert "days on hand" not in page.split("Supply and next order")[1].split("Payments")[0]

    client.post("/logout")
    confirm_birth_date(client, d["token"], DOB)
    patient_page = text(client.get(f"/r/{d['token']}/refill"))
    assert "Your refill is on its way" in patient_page
    assert "About 3" not in patient_page and "days without it" in patient_page

    portal_sign_in(app, client, "margaret@example.com", DOB)
    portal = text(client.get("/my/"))
    arrives = f"{d['arrives']:%A, %B} {d['arrives'].day}, {d['arrives'].year}"
    assert "None: your last dose was on" in portal and f"should arrive on {arrives}" in portal, portal


def test_the_bottle_in_hand_runs_out_before_the_parcel_arrives(app: Flask, client: FlaskClient, staff: dict,
                                                                clock: Any) -> None:
    """Two days of the old bottle left, the refill 4 days on the road: 2 days in hand, then 2 days without."""
    d = _ship(app, staff, clock, days_after_run_out=-1)  # today and tomorrow still covered
    with app.app_context():
        day = today()
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["days_on_hand"] == 2
    assert supply["out_since"] is None
    assert supply["arriving_on"] == d["arrives"].isoformat()
    assert supply["days_without_ahead"] == (d["arrives"] - day).days - 2

    login(client, staff["pharmacist"])
    page = text(client.get(f"/patients/{d['patient_id']}"))
    assert "2 days on hand" in page and "without medicine before the refill on its way arrives" in page

    client.post("/logout")
    portal_sign_in(app, client, "margaret@example.com", DOB)
    portal = text(client.get("/my/"))
    assert "About 2 days in hand" in portal and "The refill we sent should arrive on" in portal, portal


def test_an_early_refill_on_its_way_adds_to_the_days_in_hand(app: Flask, client: FlaskClient, staff: dict,
                                                             clock: Any) -> None:
    """Refilled with a week left (the parcel arrives before the bottle runs out): every day is held, nothing ahead."""
    d = _ship(app, staff, clock, days_after_run_out=-7)
    with app.app_context():
        day = today()
    supply = client.get(f"/api/v1/prescriptions/{d['rx_id']}", headers=d["api"]).get_json()["supply"]
    assert supply["arriving_on"] is None and supply["days_without_ahead"] == 0
    assert supply["days_on_hand"] == (d["run_out"] - day).days + 1 + 30


def test_flask_supply_verify_finds_a_cached_supply_its_dispensings_do_not_give(app: Flask, staff: dict,
                                                                              clock: Any) -> None:
    """`flask supply verify` walks every dispensing (a refill after a gap, a renewal carrying it) and agrees with
    what the supply's writer cached; a column changed around the services (plain SQL) is named and exits 1, and
    `--fix` writes it again (and the replacement that carries it) in one audited transaction."""
    import sqlalchemy as sa

    from pharmacy.workflows import prescription_changes

    d = _ship(app, staff, clock, days_after_run_out=3)
    with app.test_request_context("/"):
        w = {"pharmacist": factories.actor(staff["pharmacist"]), "rx": db.session.get(Prescription, d["rx_id"])}
        w["formula"], w["prescriber"], w["patient"] = w["rx"].formula, w["rx"].prescriber, w["rx"].patient
        renewal = prescription_changes.replace(w["pharmacist"], d["rx_id"], factories.replacement_data(w)).id
        db.session.commit()
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["supply", "verify"])
    assert ok.exit_code == 0 and "is what its dispensings give" in ok.output, ok.output
    with app.app_context():
        kept = db.session.execute(sa.text("SELECT id, latest_covered_from, prior_run_out_date, latest_run_out_date "
                                          "FROM prescriptions ORDER BY id")).all()
        db.session.execute(sa.text("UPDATE prescriptions SET latest_covered_from = NULL, latest_run_out_date = "
                                   "'2020-01-01' WHERE id = :r"), {"r": d["rx_id"]})
        db.session.commit()
    bad = runner.invoke(args=["supply", "verify"])
    # The prescription is named; its renewal is walked from what the dispensings give, so it is not.
    assert bad.exit_code == 1 and "MISMATCH: 1 prescription(s)" in bad.output, bad.output
    assert "latest_run_out_date 1, latest_covered_from 1" in bad.output
    assert bad.output.split("prescription ids: ")[1].startswith(f"{d['rx_id']}.") and renewal != d["rx_id"]
    fixed = runner.invoke(args=["supply", "verify", "--fix"])
    assert fixed.exit_code == 0 and "of 1 prescription(s)" in fixed.output, fixed.output
    assert runner.invoke(args=["supply", "verify"]).exit_code == 0
    with app.app_context():
        assert db.session.execute(sa.text("SELECT id, latest_covered_from, prior_run_out_date, latest_run_out_date "
                                          "FROM prescriptions ORDER BY id")).all() == kept
        assert db.session.execute(sa.text(
            "SELECT count(*) FROM audit_events WHERE action = 'supply.resync'")).scalar_one() == 1
