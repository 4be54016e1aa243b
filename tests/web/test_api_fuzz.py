"""Fuzz every operation of the app's own OpenAPI document with schemathesis: no 5xx, responses match.

In `make test` this is deterministic: a few examples per operation, drawn the same way on every run
(the "deterministic" hypothesis profile in tests/conftest.py). `make fuzz` runs the wide random search
(`HYPOTHESIS_PROFILE=fuzz`, hundreds of examples per operation, every schemathesis check, both databases);
whatever it finds becomes an explicit case in tests/web/test_fuzz_regressions.py, so it is checked here
for ever after.
"""
from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from pharmacy.core import services
from pharmacy.extensions import db
from tests import factories, fuzzing

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "6"))
ALL_CHECKS = os.environ.get("SCHEMATHESIS_CHECKS", "") == "all"


@pytest.fixture
def api_world(app: Any, staff: dict[str, Any]) -> dict[str, Any]:
    """Real rows to aim at, and a pharmacist's token (the role that may do the most)."""
    with app.test_request_context("/"):
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
    response = case.call(headers={"Authorization": f"Bearer {api_world['token']}"})
    fuzzing.sent(response.status_code)
    if ALL_CHECKS:
        # Every check but the ones about the document's completeness (a 4xx the spec does not list is not a bug).
        case.validate_response(response, excluded_checks=_documentation_checks() + _overridden_negatives(case))
    else:
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


def _overridden_negatives(case: Any) -> list[Any]:
    """negative_data_rejection, for a case whose invalid parts were not sent.

    - Headers: the API documents no header but the bearer token, and every case here is sent with a valid one
      (above) over whatever schemathesis generated — so a case made "invalid" by a missing or mangled
      Authorization header is a valid request once sent, and its 200 is right.
    - A query parameter whose value is None, an empty list or object (`{"page": 1, "x": []}`): a query string cannot
      carry it, so `?page=1` is sent (the wide search found `{"include_retired": true, …}` sent as
      `?include_retired=true` and answered 200, rightly). Such a query counts as not sent only when what is sent
      is itself valid — documented names, the required ones present, each value valid for its parameter — so an
      invalid value sent beside it (`?months=zz`) is still checked (unknown names that are sent are refused:
      core/query_params.py).
    A case with an invalid path or body is always checked."""
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import negative_data_rejection

    components = getattr(case.meta, "components", None) or {}
    negative = {str(getattr(location, "value", location)) for location, info in components.items()
                if info.mode == GenerationMode.NEGATIVE}
    unsent = {"header"}
    if _query_sent_is_valid(case):
        unsent.add("query")
    if negative and negative <= unsent:
        return [negative_data_rejection]
    return []


def _query_sent_is_valid(case: Any) -> bool:
    """Whether the query as it goes on the wire (empty lists dropped) is a valid one for the operation."""
    query = case.query or {}
    if not any(_unsent(value) for value in query.values()):
        return False
    sent = {name: value for name, value in query.items() if not _unsent(value)}
    params = {parameter.name: parameter for parameter in case.operation.query}
    if not set(sent) <= set(params) or any(p.is_required and name not in sent for name, p in params.items()):
        return False
    return all(params[name].is_valid(value) for name, value in sent.items())


def _unsent(value: Any) -> bool:
    """A query value that puts nothing on the wire: None, an empty list or an empty object (the client drops them)."""
    return value is None or value == [] or value == {}


def _documentation_checks() -> list[Any]:
    from schemathesis.specs.openapi import checks

    # ignored_auth: every case here carries the pharmacist's valid token (set above, over whatever schemathesis
    # generated), so a 200 is right; refusals of missing, wrong and revoked tokens are tested in test_security.py
    # and the role × route matrix.
    return [getattr(checks, name) for name in ("status_code_conformance", "positive_data_acceptance",
                                               "missing_required_header", "unsupported_method", "ignored_auth")
            if hasattr(checks, name)]
