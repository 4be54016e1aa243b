"""The app the benchmarks run: the product's `create_app`, a pinned clock, and a trivial hello route.

Gunicorn serves `benchmarks.bench_app:create_app()`; `flask --app benchmarks.bench_app bench seed …`
generates data with the same pinned clock. The hello route exists only here (never in the product):
it is the baseline every page is compared with — same server, same workers, same middleware
(request id, security headers, session load, unit of work), no work of its own.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from flask import Flask

HELLO = "/__bench/hello"


def create_app() -> Flask:
    from pharmacy import create_app as factory
    from pharmacy.core.clock import FixedClock, SystemClock

    at = os.environ.get("BENCH_CLOCK")
    clock = FixedClock(datetime.fromisoformat(at)) if at else SystemClock()
    app = factory(clock=clock)

    @app.get(HELLO)
    def bench_hello() -> Any:
        return "hello"

    return app
