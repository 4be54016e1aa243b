"""A staff member changes their own password with the current one; an admin resets only other people's.

Why it matters: a browser left signed in at the counter must not be enough to take the account over (the review
found any staff member could set their own password through the admin reset, without the current one)."""
from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Flask

from pharmacy.core.models import AuditEvent, StaffSession
from pharmacy.extensions import db
from tests.conftest import PASSWORD, login

NEW = "four unrelated words here"


def _can_sign_in(app: Flask, email: str, password: str) -> bool:
    return app.test_client().post("/login", data={"email": email, "password": password}).status_code == 302


def _page(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


def test_a_technician_changes_their_password_and_stays_signed_in_here_only(app: Flask, staff: dict) -> None:
    desk, phone = app.test_client(), app.test_client()
    tech = staff["technician"]
    login(desk, tech)
    login(phone, tech)
    page = _page(desk.get("/account"))
    assert tech.email in page and "Change your password" in page
    assert 'href="/account"' in _page(desk.get("/"))  # the name in the header leads there

    r = desk.post("/account/password", data={"current_password": PASSWORD, "new_password": NEW,
                                             "repeat_password": NEW})
    assert r.status_code == 303 and r.headers["Location"].endswith("/account")
    assert "Your password is changed" in _page(desk.get("/account"))
    assert desk.get("/patients/").status_code == 200  # this browser stays signed in
    signed_out = phone.get("/patients/")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    assert not _can_sign_in(app, tech.email, PASSWORD)
    assert _can_sign_in(app, tech.email, NEW)
    with app.app_context():
        open_rows = db.session.execute(sa.select(sa.func.count()).select_from(StaffSession).where(
            StaffSession.user_id == tech.id, StaffSession.ended_at.is_(None))).scalar_one()
        assert open_rows == 2  # the desk's new session and the sign-in just above; the phone's ended
        assert db.session.execute(sa.select(AuditEvent.outcome).where(
            AuditEvent.action == "user.password", AuditEvent.entity_id == tech.id)).scalars().all() == ["ok"]


def test_each_wrong_field_is_named_and_nothing_changes(app: Flask, staff: dict) -> None:
    client = app.test_client()
    pharmacist = staff["pharmacist"]
    login(client, pharmacist)
    cases = [
        ({"current_password": "a guess at it", "new_password": NEW, "repeat_password": NEW},
         "current_password", "That is not your current password."),
        ({"current_password": PASSWORD, "new_password": NEW, "repeat_password": NEW + "!"},
         "repeat_password", "The two new passwords are not the same."),
        ({"current_password": PASSWORD, "new_password": "short", "repeat_password": "short"},
         "new_password", "12"),
        ({"current_password": PASSWORD, "new_password": PASSWORD, "repeat_password": PASSWORD},
         "new_password", "not the one you have now"),
        ({"current_password": "", "new_password": "", "repeat_password": ""}, "current_password", "Fill this in."),
    ]
    for data, field, message in cases:
        r = client.post("/account/password", data=data)
        page = _page(r)
        assert r.status_code == 422, (data, r.status_code)
        error = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
        assert error and message in error.group(1), (field, page[:3000])
        assert 'aria-invalid="true"' in page
        assert not re.search(r'type="password"[^>]*value=', page)  # what was typed is never sent back
    # Everything wrong at once is named at once, so nobody sends the form three times.
    page = _page(client.post("/account/password", data={"current_password": "a guess at it", "new_password": "short",
                                                        "repeat_password": "other"}))
    assert {"current_password", "new_password", "repeat_password"} == set(re.findall(r'id="(\w+)-error"', page))
    assert client.get("/patients/").status_code == 200  # still signed in
    assert _can_sign_in(app, pharmacist.email, PASSWORD)
    with app.app_context():
        outcomes = db.session.execute(sa.select(AuditEvent.outcome).where(
            AuditEvent.action == "user.password", AuditEvent.entity_id == pharmacist.id)).scalars().all()
    assert outcomes == ["failed", "failed"]  # each wrong current password, audited; the other refusals changed nothing


def test_the_admin_reset_is_for_other_people_only(app: Flask, staff: dict) -> None:
    admin, tech = app.test_client(), app.test_client()
    login(admin, staff["admin"])
    login(tech, staff["technician"])
    # Not one's own, not even an admin's: that needs the current password.
    r = admin.post(f"/admin/users/{staff['admin'].id}/password", data={"password": NEW})
    assert r.status_code == 422 and "Your account" in _page(r)
    assert _can_sign_in(app, staff["admin"].email, PASSWORD)
    # A technician may not use the reset at all, for anyone (it used to allow their own).
    for target in (staff["technician"], staff["pharmacist"]):
        assert tech.post(f"/admin/users/{target.id}/password", data={"password": NEW}).status_code == 403
    assert _can_sign_in(app, staff["technician"].email, PASSWORD)
    # The admin's own row links to the account page instead of a reset box.
    page = _page(admin.get("/admin/users"))
    assert f'id="pw-{staff["admin"].id}"' not in page and f'id="pw-{staff["technician"].id}"' in page
    assert 'href="/account">Change your password</a>' in page


def test_the_console_resets_any_account(app: Flask, staff: dict) -> None:
    """A forgotten admin password has no one else to reset it: whoever holds the server does, audited."""
    result = app.test_cli_runner().invoke(args=["users", "set-password", "--email", staff["admin"].email.upper(),
                                                "--password", NEW])
    assert result.exit_code == 0, result.output
    assert "sessions have ended" in result.output
    assert _can_sign_in(app, staff["admin"].email, NEW)
    weak = app.test_cli_runner().invoke(args=["users", "set-password", "--email", staff["admin"].email,
                                              "--password", "short"])
    assert weak.exit_code != 0 and "12" in weak.output
    unknown = app.test_cli_runner().invoke(args=["users", "set-password", "--email", "nobody@example.com",
                                                 "--password", NEW])
    assert unknown.exit_code != 0 and "No such account" in unknown.output
    assert _can_sign_in(app, staff["admin"].email, NEW)
