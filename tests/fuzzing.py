"""One generated case after another through the app, for the fuzzers that aim at real rows (billing, workflow).

In `make test` each operation gets a fixed sample (EXAMPLES per generation mode, drawn the same way on every run);
`make fuzz` (HYPOTHESIS_PROFILE=fuzz, SCHEMATHESIS_EXAMPLES=…) draws afresh and many more.
"""
from __future__ import annotations

import os
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings

WIDE = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
# Cases sent to the app by the schemathesis tests of this process, and how many the server failed on: printed at
# the end of the run (tests/conftest.py), so `make fuzz` says how wide its search was.
SENT = {"cases": 0, "server errors": 0}


def sent(status_code: int) -> None:
    SENT["cases"] += 1
    SENT["server errors"] += status_code >= 500


def fuzzer(client: FlaskClient, strategy: Any, headers: dict[str, str], errors: list[str]) -> Any:
    """A hypothesis test sending each generated case through the app; server errors are collected in `errors`."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not WIDE,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=strategy)
    def hit(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://localhost", headers=headers)
        response = client.open(kwargs["url"].removeprefix("http://localhost"), method=case.method,
                               query_string=kwargs.get("params"), headers=kwargs.get("headers"),
                               json=kwargs.get("json"), data=kwargs.get("data"))
        response.close()
        sent(response.status_code)
        if response.status_code >= 500:
            errors.append(f"{case.method} {case.formatted_path} {kwargs.get('params')} {kwargs.get('json')!r}")

    return hit
