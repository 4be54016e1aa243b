"""The app the benchmarks run: the product's `create_app`, a pinned clock, and three baseline routes.

Gunicorn serves `benchmarks.bench_app:create_app()`; `flask --app benchmarks.bench_app bench seed …`
generates data with the same pinned clock. The baseline routes exist only here (never in the product);
every page is compared with them on the same server, in the same run:

* hello (/__bench/hello) — no database, no template: what the server, the workers and the middleware
  (request id, security headers, session cookie, unit of work) cost on their own;
* fortunes (/__bench/fortunes/<start>) — TechEmpower's "fortunes" shape: one indexed read of 12 rows
  (patients by primary key, from `start`) and a small Jinja template, escaped; no sign-in check;
* audited fortunes (/__bench/fortunes-audited/<start>) — the same behind the staff sign-in (the user read
  from the session, as on every staff page), plus one row in the audit trail through the app's own
  `audit.record` and the unit of work's commit: the floor for a page that shows patient data and must
  audit that read. A page cannot do less than this, so its share of this baseline is the honest one.
"""
from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from flask import Flask

HELLO = "/__bench/hello"
FORTUNES = "/__bench/fortunes"
AUDITED_FORTUNES = "/__bench/fortunes-audited"
FORTUNE_ROWS = 12
FORTUNE_ACTION = "bench.fortunes.view"  # a read (".view"): kept even if the request were rolled back

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fortunes</title></head>
<body><table>
<tr><th>id</th><th>name</th></tr>
{% for row in rows %}<tr><td>{{ row.id }}</td><td>{{ row.last_name }}, {{ row.first_name }}</td></tr>
{% endfor %}</table></body></html>
"""


def create_app() -> Flask:
    from pharmacy import create_app as factory
    from pharmacy.core.clock import FixedClock, SystemClock

    at = os.environ.get("BENCH_CLOCK")
    clock = FixedClock(datetime.fromisoformat(at)) if at else SystemClock()
    app = factory(clock=clock)
    add_baselines(app)
    return app


def add_baselines(app: Flask) -> None:
    """The three baseline routes, on an app built by the product's factory."""
    import sqlalchemy as sa
    from flask import render_template

    from pharmacy.core import audit
    from pharmacy.core.auth import current_actor, staff_required
    from pharmacy.extensions import db
    from pharmacy.patients.models import Patient

    template = app.jinja_env.from_string(_TEMPLATE)  # compiled once, as a template file would be (Jinja's cache)
    fortunes_query = (sa.select(Patient.id, Patient.last_name, Patient.first_name)
                      .where(Patient.id >= sa.bindparam("start")).order_by(Patient.id).limit(FORTUNE_ROWS))

    def fortunes_rows(start: int) -> list[Any]:
        return list(db.session.execute(fortunes_query, {"start": start}))

    @app.get(HELLO)
    def bench_hello() -> Any:
        return "hello"

    @app.get(f"{FORTUNES}/<int:start>")
    def bench_fortunes(start: int) -> Any:
        return render_template(template, rows=fortunes_rows(start))

    @app.get(f"{AUDITED_FORTUNES}/<int:start>")
    @staff_required
    def bench_fortunes_audited(start: int) -> Any:
        rows = fortunes_rows(start)
        audit.record(current_actor(), FORTUNE_ACTION, patient_id=rows[0].id if rows else None,
                     details={"rows": len(rows)})
        return render_template(template, rows=rows)  # the unit of work commits the audit row after this
