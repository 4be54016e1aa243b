"""Sessions end on the server: a cookie copied before sign-out, a password change or a deactivation is refused.

The attack: sign in, keep the cookie, sign out, then replay the kept cookie (from the same browser, or from
another User-Agent and address). A signed cookie alone stays valid until it expires; the server-side session
row (core/sessions.py) is what the replay meets.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.core import sessions
from pharmacy.core.models import StaffSession
from pharmacy.extensions import db
from tests import factories
from tests.conftest import PASSWORD, login

OTHER_BROWSER = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}, "headers": {"User-Agent": "curl/8.0 (replay)"}}


def _patient_id(app: Flask, staff: dict) -> int:
    with app.test_request_context("/"):
        p = factories.patient(factories.actor(staff["pharmacist"]))
        db.session.commit()
        return p.id


def _replay(app: Flask, cookie: str, path: str, **kwargs: Any) -> Any:
    """A fresh client (another browser) presenting a copied session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    return thief.get(path, **kwargs)


def _signed_out(response: Any) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_cookie_kept_before_sign_out_is_refused_after_it(app: Flask, client: FlaskClient, staff: dict) -> None:
    patient_id = _patient_id(app, staff)
    login(client, staff["pharmacist"])
    assert client.get(f"/patients/{patient_id}").status_code == 200
    kept = client.get_cookie("session").value
    # Before sign-out the copy works (so the checks below can fail for the right reason).
    assert _replay(app, kept, f"/patients/{patient_id}").status_code == 200

    assert client.post("/logout").status_code == 302
    for extra in ({}, OTHER_BROWSER):
        response = _replay(app, kept, f"/patients/{patient_id}", **extra)
        assert _signed_out(response), (extra, response.status_code)
        assert "Ellison" not in response.get_data(as_text=True)
    with app.app_context():
        row = db.session.execute(sa.select(StaffSession)).scalar_one()
        assert row.ended_reason == "logout" and row.ended_at is not None


def test_sign_out_ends_that_session_only(app: Flask, staff: dict) -> None:
    desk, phone = app.test_client(), app.test_client()
    login(desk, staff["technician"])
    login(phone, staff["technician"])
    desk.post("/logout")
    assert _signed_out(desk.get("/patients/"))
    assert phone.get("/patients/").status_code == 200


def test_a_password_change_ends_every_session_of_that_person_at_once(app: Flask, staff: dict) -> None:
    browser, admin = app.test_client(), app.test_client()
    login(browser, staff["pharmacist"])
    kept = browser.get_cookie("session").value
    login(admin, staff["admin"])
    response = admin.post(f"/admin/users/{staff['pharmacist'].id}/password",
                          data={"password": "a brand new passphrase 42"})
    assert response.status_code == 302
    assert _signed_out(browser.get("/patients/"))
    assert _signed_out(_replay(app, kept, "/patients/"))
    # The person signs in again with the new password (the old one is refused).
    assert browser.post("/login", data={"email": staff["pharmacist"].email, "password": PASSWORD}).status_code == 401
    assert browser.post("/login", data={"email": staff["pharmacist"].email,
                                        "password": "a brand new passphrase 42"}).status_code == 302
    with app.app_context():
        reasons = db.session.execute(sa.select(StaffSession.ended_reason).where(
            StaffSession.user_id == staff["pharmacist"].id).order_by(StaffSession.id)).scalars().all()
        assert reasons == ["password", None]


def test_deactivation_ends_the_session_and_a_kept_cookie(app: Flask, staff: dict) -> None:
    browser, admin = app.test_client(), app.test_client()
    login(browser, staff["technician"])
    kept = browser.get_cookie("session").value
    login(admin, staff["admin"])
    assert admin.post(f"/admin/users/{staff['technician'].id}/active", data={"active": "0"}).status_code == 302
    # Even re-activating the account does not bring the old session back.
    assert admin.post(f"/admin/users/{staff['technician'].id}/active", data={"active": "1"}).status_code == 302
    assert _signed_out(_replay(app, kept, "/patients/", **OTHER_BROWSER))
    assert _signed_out(browser.get("/patients/"))


def test_an_idle_session_is_ended_on_the_server_too(app: Flask, client: FlaskClient, staff: dict, clock: Any) -> None:
    from datetime import timedelta

    login(client, staff["pharmacist"])
    clock.advance(timedelta(minutes=31))
    assert _signed_out(client.get("/patients/"))
    with app.app_context():
        assert db.session.execute(sa.select(StaffSession.ended_reason)).scalar_one() == "expired"


def test_prune_ends_abandoned_sessions_and_deletes_old_ended_ones(app: Flask, staff: dict, clock: Any) -> None:
    """A closed browser never signs out: the nightly prune ends its row once the absolute limit has passed, and
    ended rows go after the keep period — while a session still in use is left alone."""
    abandoned = app.test_client()
    login(abandoned, staff["pharmacist"])
    kept = abandoned.get_cookie("session").value
    clock.advance(timedelta(hours=app.extensions["pharmacy.settings"].session_max_hours + 1))
    fresh = app.test_client()
    login(fresh, staff["technician"])
    runner = app.test_cli_runner()

    result = runner.invoke(args=["users", "prune-sessions"])
    assert result.exit_code == 0, result.output
    assert "1 expired, 0 deleted" in result.output
    with app.app_context():
        rows = {r.user_id: r for r in db.session.execute(sa.select(StaffSession)).scalars()}
    assert rows[staff["pharmacist"].id].ended_reason == "expired"
    assert rows[staff["technician"].id].ended_at is None
    assert _signed_out(_replay(app, kept, "/"))
    assert fresh.get("/").status_code == 200  # the session in use survives the prune

    clock.advance(timedelta(days=sessions.KEEP_ENDED_DAYS + 1))
    result = runner.invoke(args=["users", "prune-sessions"])
    assert "1 expired, 1 deleted" in result.output  # the technician's, now past the limit too; the old one gone
    with app.app_context():
        left = db.session.execute(sa.select(StaffSession.user_id, StaffSession.ended_reason)).all()
    assert left == [(staff["technician"].id, "expired")]
