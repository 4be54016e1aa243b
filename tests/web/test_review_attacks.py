"""Attack review (newest surfaces): what an attacker tried over HTTP and found still open. Each test fails on the
current code and passes once the hole is closed; the docstring says what the attacker gains and what is right."""
from __future__ import annotations

import re

import sqlalchemy as sa

from pharmacy.core.models import ApiToken
from pharmacy.extensions import db
from tests.conftest import PASSWORD, login


def test_patient_search_with_a_page_number_beyond_64_bits_is_not_a_server_error(filled, client) -> None:
    """`/search?q=…&page=10**30`: the page number reaches OFFSET unbounded (dashboard/search.search only clamps
    it from below), SQLite's driver raises OverflowError and the staff member gets a 500 (PostgreSQL: a bigint
    out-of-range DataError). Every other list (patients, orders, refills, renewals, outbox, FHIR `_page`) clamps
    the page. An attacker (or a typo, or a crawler following a crafted link) gets an error page and a logged
    traceback per request — an unhandled-exception path on a PHI page. Right: the page is clamped like the
    refill queue's (`refills.queue._page_number`) and the answer is an ordinary page (no results) or a 4xx."""
    login(client, filled["staff"]["pharmacist"])
    r = client.get("/search?q=smith&page=" + "9" * 30)
    assert r.status_code < 500, r.status_code
    r = client.get("/search?q=smith&page=" + str(2**63))
    assert r.status_code < 500, r.status_code


def test_minting_an_api_token_from_a_signed_in_browser_needs_the_current_password(filled, client, app) -> None:
    """A browser left signed in (or a stolen session cookie) is enough to mint a bearer token on the API tokens
    page: POST /admin/tokens with only a name answers 200 with the raw token. That token reads the whole JSON API
    and FHIR (every patient record) with the person's role, outlives the session, and — by design — survives the
    victim's password change, the very remedy the product offers for a compromised browser. The product's own
    rule (core/services.set_password: "a browser left signed in must not be enough to take the account over",
    which is why /account/password asks for the current password) is bypassed by this second credential.
    Right: issuing a token asks for the current password (as the password change does); without it nothing is
    created (422) and no token is shown."""
    tech = filled["staff"]["technician"]
    login(client, tech)
    with app.app_context():
        before = db.session.execute(sa.select(sa.func.count()).select_from(ApiToken)
                                    .where(ApiToken.user_id == tech.id)).scalar_one()
    r = client.post("/admin/tokens", data={"name": "left-open browser"})
    body = r.get_data(as_text=True)
    with app.app_context():
        after = db.session.execute(sa.select(sa.func.count()).select_from(ApiToken)
                                   .where(ApiToken.user_id == tech.id)).scalar_one()
    assert after == before, "a token was minted without the current password"
    assert not re.search(r"ldn_[A-Za-z0-9_-]{40}", body), "a whole token was shown"  # the list shows prefixes only
    assert r.status_code == 422
    wrong = client.post("/admin/tokens", data={"name": "left-open browser", "current_password": "a guess"})
    assert wrong.status_code == 422 and "That is not your current password." in wrong.get_data(as_text=True)
    # With the password, the same form makes one, shown once.
    ok = client.post("/admin/tokens", data={"name": "pharmacy system", "current_password": PASSWORD})
    assert ok.status_code == 200 and re.search(r"ldn_[A-Za-z0-9_-]{40}", ok.get_data(as_text=True))
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(ApiToken)
                                  .where(ApiToken.user_id == tech.id)).scalar_one() == before + 1
