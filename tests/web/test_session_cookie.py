"""What a page fetches after it is shown sets no session cookie.

A cookie is the session as it stood when its request began. A stylesheet, an icon, a faxed page's image or Today's
deferred block still loading when the person submits a form can answer after the form did, and its cookie would
put back the session as it was — the form's message on the next page was lost so (seen in the browser test of the
fax intake). The pages themselves still refresh the cookie: that is the idle limit."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.conftest import login


@pytest.mark.parametrize("path", ["/static/css/app.css", "/static/js/app.js", "/static/favicon.svg"])
def test_static_files_set_no_session_cookie(client: FlaskClient, staff: dict, path: str) -> None:
    login(client, staff["pharmacist"])
    with client.get(path) as response:
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    assert "Set-Cookie" in client.get("/").headers  # a page does refresh it
