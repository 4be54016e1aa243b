"""Attack review: what an attacker tried through the HTTP surface and found open, kept as regressions (each fails
if its protection breaks), plus the open-redirect check of the sign-in's next= parameter."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from pharmacy import create_app
from pharmacy.core import links
from pharmacy.extensions import db
from tests.conftest import PASSWORD
from tests.portal_helpers import delivered_code, titrating_world

DOB = date(1968, 4, 12)
PRODUCTION_KEY = "f3b1c9e07a5d4e2b8c6a1f0e9d7b5a3c"


@pytest.fixture
def portal_patient(app: Any, staff: dict) -> int:
    with app.test_request_context("/"):
        w = titrating_world(staff)
        db.session.commit()
        return w["patient"].id


def test_the_right_code_after_the_lock_is_refused_even_when_its_request_read_the_count_before_it(
        app, client, portal_patient, monkeypatch) -> None:
    """Five guesses lock a one-time code. A request that read the wrong-try count before a concurrent burst of
    guesses locked it must still be refused: its right answer goes through the same atomic gate as the guesses
    (as a refill link's date of birth does), so concurrent requests cannot try more than five codes."""
    assert client.post("/my/sign-in", data={"contact": "margaret@example.com"}).status_code == 303
    code = delivered_code(app)
    racer = app.test_client()  # a second connection of the attacker's, same cookie (the same challenge)
    racer.set_cookie("portal", client.get_cookie("portal", path="/my").value, path="/my")
    wrong = "000000" if code != "000000" else "111111"
    statuses = [client.post("/my/sign-in/code", data={"code": wrong, "month": 4, "day": 12, "year": 1968}).status_code
                for _ in range(5)]
    assert statuses == [422, 422, 422, 422, 409]
    # The racer's request read the count before those five were counted (what concurrency gives an attacker).
    monkeypatch.setattr(links, "failed_attempts", lambda nonce: 0)
    r = racer.post("/my/sign-in/code", data={"code": code, "month": DOB.month, "day": DOB.day, "year": DOB.year})
    assert r.status_code == 409, r.status_code
    assert racer.get("/my/").status_code == 303  # not signed in


def test_every_cookie_set_in_production_is_secure_httponly_and_samesite(app_config, clock, staff) -> None:
    """A second anonymous request (the sign-in form posted after it was shown) made Flask-Login clear its unused
    remember-me cookie with a bare `remember_token=; Path=/` — no Secure, HttpOnly or SameSite."""
    app = create_app({**app_config, "PHARMACY_ENV": "production", "SECRET_KEY": PRODUCTION_KEY}, clock=clock)
    client = app.test_client()
    base = "https://pharmacy.test"
    try:
        answers = [client.get("/login", base_url=base), client.get("/r/not-a-token", base_url=base),
                   client.post("/login", data={"email": staff["pharmacist"].email, "password": PASSWORD},
                               base_url=base),
                   client.get("/my/sign-in", base_url=base), client.get("/my/sign-in", base_url=base)]
        cookies = [c for r in answers for c in r.headers.getlist("Set-Cookie")]
        assert cookies
        for cookie in cookies:
            assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("target", ["/\\evil.example", "/\\/evil.example", "//evil.example", "https://evil.example/",
                                    "\\\\evil.example", "/\t/evil.example", "http:/evil.example", "///evil.example"])
def test_sign_in_next_never_leaves_the_site(client, staff, target) -> None:
    from urllib.parse import quote

    r = client.post("/login?next=" + quote(target, safe=""),
                    data={"email": staff["pharmacist"].email, "password": PASSWORD})
    location = r.headers["Location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location, location
