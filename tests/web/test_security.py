"""Access and safety of health data: CSRF, headers, cookies, sessions, brute force, tokens, audit, injection."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pharmacy import create_app
from pharmacy.core.models import ApiToken, AuditEvent
from pharmacy.extensions import db
from tests import factories
from tests.conftest import PASSWORD, login

INJECTIONS = [
    "<script>alert('x')</script>",
    "\"><img src=x onerror=alert(1)>",
    "Robert'); DROP TABLE patients;--",
    "' OR '1'='1",
    "{{ 7*7 }}",
]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the form carries a CSRF token"
    return match.group(1)


@pytest.fixture
def csrf_client(app_config, clock, staff):
    app = create_app({**app_config, "WTF_CSRF_ENABLED": True}, clock=clock)
    yield app, app.test_client()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_login_form_needs_its_csrf_token(csrf_client, staff) -> None:
    _app, client = csrf_client
    who = staff["pharmacist"]
    missing = client.post("/login", data={"email": who.email, "password": PASSWORD})
    assert missing.status_code == 400
    wrong = client.post("/login", data={"email": who.email, "password": PASSWORD, "csrf_token": "forged"})
    assert wrong.status_code == 400
    token = _csrf(client.get("/login").get_data(as_text=True))
    ok = client.post("/login", data={"email": who.email, "password": PASSWORD, "csrf_token": token})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"


def test_state_changing_staff_form_refuses_a_forged_post(csrf_client, staff) -> None:
    app, client = csrf_client
    token = _csrf(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": staff["admin"].email, "password": PASSWORD, "csrf_token": token})
    response = client.post("/admin/users", data={"email": "evil@x.test", "full_name": "Evil", "role": "admin",
                                                 "password": "a long enough secret"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.execute(sa.text("select count(*) from users where email = 'evil@x.test'")).scalar() == 0


def test_security_headers_and_no_store(client, staff) -> None:
    login(client, staff["pharmacist"])
    response = client.get("/patients/")
    h = response.headers
    assert "script-src 'self'" in h["Content-Security-Policy"] and "unsafe-inline" not in h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["Cache-Control"] == "no-store"
    static = client.get("/static/css/app.css")
    assert static.headers.get("Cache-Control") != "no-store"
    static.close()


def test_session_cookie_flags_in_development(client, staff) -> None:
    response = client.post("/login", data={"email": staff["pharmacist"].email, "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_production_cookie_is_secure_with_host_prefix(app_config, clock, staff) -> None:
    app = create_app({**app_config, "PHARMACY_ENV": "production", "SECRET_KEY": "f3b1c9e07a5d4e2b8c6a1f0e9d7b5a3c"},
                      clock=clock)
    client = app.test_client()
    response = client.post("/login", data={"email": staff["pharmacist"].email, "password": PASSWORD},
                           base_url="https://pharmacy.test")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie and "Path=/" in cookie
    assert "Strict-Transport-Security" in response.headers
    with app.app_context():
        db.engine.dispose()


def test_session_holds_no_patient_data(client, staff, app) -> None:
    from flask.sessions import SecureCookieSessionInterface

    login(client, staff["pharmacist"])
    client.get("/patients/")
    cookie = client.get_cookie("session")
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    data = serializer.loads(cookie.value)
    assert set(data) <= {"_user_id", "_fresh", "_id", "login_at", "seen_at", "sid", "csrf_token", "_flashes",
                         "link_ok", "expired", "_permanent"}


def test_idle_session_expires(client, staff, clock) -> None:
    login(client, staff["pharmacist"])
    assert client.get("/patients/").status_code == 200
    clock.advance(timedelta(minutes=31))
    response = client.get("/patients/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_absolute_session_lifetime(client, staff, clock) -> None:
    login(client, staff["pharmacist"])
    for _ in range(26):  # active every 29 minutes, never idle, yet the 12-hour limit ends it
        clock.advance(timedelta(minutes=29))
        response = client.get("/patients/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_brute_force_login_is_limited_and_every_failure_audited(client, staff, app) -> None:
    who = staff["pharmacist"]
    codes = [client.post("/login", data={"email": who.email, "password": f"guess {i}"}).status_code
             for i in range(12)]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    with app.app_context():
        failures = db.session.execute(
            sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.action == "login.failure")
        ).scalar_one()
        assert failures == 10
        details = db.session.execute(sa.select(AuditEvent.details)).scalars().all()
        assert not any("guess" in str(d) for d in details)


def test_deactivated_user_is_signed_out(client, staff, app) -> None:
    login(client, staff["technician"])
    assert client.get("/patients/").status_code == 200
    with app.test_request_context("/"):
        from pharmacy.core import services

        services.set_active(factories.actor(staff["admin"]), staff["technician"].id, False)
        db.session.commit()
    response = client.get("/patients/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    again = client.post("/login", data={"email": staff["technician"].email, "password": PASSWORD})
    assert again.status_code == 401


def test_api_tokens_are_stored_hashed_and_revocable(client, staff, app) -> None:
    with app.test_request_context("/"):
        from pharmacy.core import services

        token, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "pms")
        db.session.commit()
        stored = db.session.execute(sa.select(ApiToken.token_hash)).scalar_one()
        assert raw not in stored and len(stored) == 64
        token_id = token.id
    from pharmacy.core.auth import _actor_from_bearer

    headers = {"Authorization": f"Bearer {raw}"}
    with app.test_request_context("/api/v1/x", headers=headers):
        actor = _actor_from_bearer()
        assert actor is not None and actor.user_id == staff["pharmacist"].id and actor.role.value == "pharmacist"
        db.session.commit()
    with app.test_request_context("/api/v1/x", headers={"Authorization": f"Bearer {raw}x"}):
        assert _actor_from_bearer() is None
    with app.test_request_context("/"):
        services.revoke_token(factories.actor(staff["pharmacist"]), token_id)
        db.session.commit()
    with app.test_request_context("/api/v1/x", headers=headers):
        assert _actor_from_bearer() is None


def test_reads_writes_and_refusals_are_audited_with_who_where(client, staff, app) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff)
        db.session.commit()
        patient_id = w["patient"].id
    login(client, staff["pharmacist"])
    assert client.get(f"/patients/{patient_id}", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    admin = app.test_client()
    login(admin, staff["admin"])
    assert admin.get(f"/patients/{patient_id}").status_code == 403  # admins do not open clinical records
    with app.app_context():
        events = db.session.execute(sa.select(AuditEvent).where(AuditEvent.patient_id == patient_id)
                                    .order_by(AuditEvent.id)).scalars().all()
        view = next(e for e in events if e.action == "patient.view")
        assert view.actor_user_id == staff["pharmacist"].id and view.ip_address == "10.1.2.3"
        assert view.at.tzinfo is not None
        denied = next(e for e in events if e.outcome == "denied")
        assert denied.actor_user_id == staff["admin"].id and denied.action == "denied.view_clinical"
        assert any(e.action == "patient.create" for e in events)
        with pytest.raises(sa.exc.DatabaseError):
            db.session.execute(sa.update(AuditEvent).values(action="tampered"))
            db.session.flush()
        db.session.rollback()


def test_audit_page_filters_and_exports_csv(client, staff, app) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff)
        db.session.commit()
        patient_id = w["patient"].id
    login(client, staff["admin"])
    page = client.get(f"/admin/audit?patient_id={patient_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "patient.create" in html and "prescription.create" in html
    bad = client.get("/admin/audit?since=not-a-date")
    assert bad.status_code == 422
    csv_response = client.get(f"/admin/audit.csv?patient_id={patient_id}")
    body = csv_response.get_data(as_text=True)
    assert csv_response.mimetype == "text/csv"
    lines = body.strip().splitlines()
    assert lines[0].startswith("id,at_utc,actor_kind")
    assert all(f",{patient_id}," in line for line in lines[1:])
    assert any("prescription.create" in line for line in lines[1:])


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_are_stored_and_rendered_safely(text, client, staff, app) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff, patient={"last_name": text, "medications": [text]})
        db.session.commit()
        patient_id = w["patient"].id
    login(client, staff["pharmacist"])
    html = client.get(f"/patients/{patient_id}").get_data(as_text=True)
    from markupsafe import escape

    assert str(escape(text)) in html  # shown as the text it is
    assert "<script>alert" not in html and "<img src=x" not in html
    search = client.get("/search", query_string={"q": text})
    assert search.status_code == 200
    with app.app_context():
        assert db.session.execute(sa.text("select count(*) from patients")).scalar() == 1


@pytest.mark.parametrize(("method", "path"), [("TRACE", "/login"), ("DELETE", "/login"), ("TRACE", "/api/v1/patients"),
                                              ("PUT", "/healthz")])
def test_a_method_a_route_does_not_take_is_a_405_that_says_which_it_does(client, method, path) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert method not in allowed and "GET" in allowed
    assert "TRACE" not in allowed


def test_a_tokens_last_use_is_written_to_the_minute(client, staff, app, clock) -> None:
    """The tokens page shows when each token was last used; a client calling many times a minute does not write
    to its token row on every call, and a call a minute or more later does."""
    from pharmacy.core import services

    with app.test_request_context("/"):
        token, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "api")
        db.session.commit()
        token_id = token.id
    headers = {"Authorization": f"Bearer {raw}"}

    def last_used() -> object:
        with app.app_context():
            return db.session.get(ApiToken, token_id).last_used_at

    def token_writes(path: str) -> list[str]:
        from tests.conftest import counted_statements

        with app.app_context(), counted_statements(db.engine) as seen:
            assert client.get(path, headers=headers).status_code == 200
        return [s for s in seen if s.lstrip().upper().startswith("UPDATE API_TOKENS")]

    assert len(token_writes("/api/v1/patients")) == 1 and last_used() == clock.now()
    first = clock.now()
    clock.advance(timedelta(seconds=59))
    assert token_writes("/api/v1/patients") == [] and last_used() == first
    clock.advance(timedelta(seconds=1))
    assert len(token_writes("/api/v1/patients")) == 1 and last_used() == clock.now()
