"""The staff search reads what was typed, whatever else came with it: control characters and text-direction marks
(pasted from another system, or sent on purpose) are spaces, never a database error — PostgreSQL refuses a NUL."""
from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.extensions import db
from tests import factories
from tests.conftest import login


@pytest.mark.parametrize("typed", ["Smith%00", "%00Smith", "Sm%1Bith Jane", "Smith%E2%80%AE", "%00", "%E2%80%AE%00"])
def test_a_search_with_characters_nobody_types_is_read_as_text(app: Flask, client: FlaskClient, staff: dict,
                                                               typed: str) -> None:
    with app.test_request_context("/"):
        world = factories.world(staff, patient={"first_name": "Jane", "last_name": "Smith"})
        db.session.commit()
        patient_id = world["patient"].id
    login(client, staff["pharmacist"])
    response = client.get(f"/search?q={typed}")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    found = f'href="/patients/{patient_id}"' in response.get_data(as_text=True)
    assert found is ("Smith" in typed and "Sm%1Bith" not in typed)


@pytest.mark.parametrize("last_name", ["Hassan\u200czadeh", "حسن\u200cزاده", "Smith\u00adson"])
def test_names_with_invisible_characters_of_their_own_are_found(app: Flask, client: FlaskClient, staff: dict,
                                                                last_name: str) -> None:
    """A zero-width non-joiner belongs in many Persian surnames, a soft hyphen in some imported records: they are
    part of the name, not characters to strip, so typing (or pasting) the name finds it."""
    with app.test_request_context("/"):
        world = factories.world(staff, patient={"first_name": "Dara", "last_name": last_name})
        db.session.commit()
        patient_id = world["patient"].id
    login(client, staff["pharmacist"])
    response = client.get("/search", query_string={"q": last_name})
    assert response.status_code == 200
    assert f'href="/patients/{patient_id}"' in response.get_data(as_text=True)


def test_the_page_shows_back_what_it_searched_for_not_the_marks_around_it(app: Flask, client: FlaskClient,
                                                                        staff: dict) -> None:
    """Echoed as typed, a right-to-left override turned "1 patient for “Smith”" around on the screen (seen in
    chromium); the summary and both search boxes show the text searched for."""
    with app.test_request_context("/"):
        factories.world(staff, patient={"first_name": "Jane", "last_name": "Smith"})
        db.session.commit()
    login(client, staff["pharmacist"])
    html = client.get("/search", query_string={"q": "\u202eSmith\x00 Jane"}).get_data(as_text=True)
    assert "\u202e" not in html and "\x00" not in html
    assert "for “Smith Jane”" in html
    assert html.count('value="Smith Jane"') == 2  # the page's box and the header's
