"""Fuzz every operation of the app's own OpenAPI document with schemathesis: no 5xx, responses match.

Bounded (a few examples per operation) so `make test` stays quick; run with more with
`SCHEMATHESIS_EXAMPLES=200 .venv/bin/pytest tests/web/test_api_fuzz.py`.
"""
from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from pharmacy.extensions import db
from tests import factories

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "6"))


@pytest.fixture
def api_world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    """Real rows to aim at, and a pharmacist's token (the role that may do the most)."""
    with app.test_request_context("/"):
        from pharmacy.core import services

        factories.world(staff)
        _, raw = services.issue_token(factories.actor(staff["pharmacist"]), staff["pharmacist"].id, "fuzz")
        db.session.commit()
    return {"token": raw}


@pytest.fixture
def api_schema(app: Any, api_world: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
def test_api_operation_never_fails_on_the_server(case: Any, api_world: dict[str, Any]) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    response = case.call(headers={"Authorization": f"Bearer {api_world['token']}"})
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
