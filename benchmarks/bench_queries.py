"""SQL statements per request for each page and endpoint, at 100 and at 100,000 patients.

    .venv/bin/python benchmarks/bench_queries.py --db sqlite
    .venv/bin/python benchmarks/bench_queries.py --db postgres

Each page is requested in-process (Flask's test client on the bench app, clock at 12:00 on the data's
day) as the bench pharmacist, once to warm up and once counted with a `before_cursor_execute`
listener (a page slower than 2 s is counted on its first request); the time of the counted request
is shown too. Target: the same number at both sizes (the
query-count test in tests/web/test_query_counts.py holds the same line at 3 and 30 patients in
`make test`). Pages that do not exist yet are listed as missing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common

PHARMACIST = "bench-pharmacist@pharmacy.example"

# (label, endpoint, url values, query string, method)
PAGES: list[tuple[str, str, tuple[str, ...], dict[str, str], str]] = [
    ("dashboard home", "dashboard.home", (), {}, "GET"),
    ("patient search", "dashboard.search", (), {"q": "smith, ma"}, "GET"),
    ("patients index", "patients.index", (), {}, "GET"),
    ("patient page", "patients.detail", ("patient_id",), {}, "GET"),
    ("prescription page", "prescriptions.detail", ("rx_id",), {}, "GET"),
    ("order queue", "compounding.queue", (), {}, "GET"),
    ("order page", "compounding.order", ("order_id",), {}, "GET"),
    ("refill queue", "refills.queue", (), {}, "GET"),
    ("renewals awaited", "refills.renewals_queue", (), {}, "GET"),
    ("refill link page", "refills.link_refill", ("token",), {}, "GET"),
    ("outbox", "reminders.outbox", (), {}, "GET"),
    ("patient costs", "billing.patient_costs", ("patient_id",), {}, "GET"),
    ("money reports", "billing.reports", (), {}, "GET"),
    ("adherence report", "billing.adherence", (), {}, "GET"),
    ("API refill queue", "refill-requests.queue", (), {}, "GET"),
    ("API refill request (POST)", "refill-requests.create", (), {}, "POST"),
]


def measure(kind: str, patients: int, seed: int, fresh: bool, order_state: str | None = None) -> dict[str, Any]:
    bdb = common.prepare(kind, patients, seed=seed, fresh=fresh)
    app = common.app_for(bdb, bdb.at(12))
    app.config["WTF_CSRF_ENABLED"] = False
    from flask import url_for

    from pharmacy.core import links
    from pharmacy.core.actor import staff
    from pharmacy.core.roles import Role
    from pharmacy.core.services import issue_token
    from pharmacy.extensions import db

    client = app.test_client()
    r = client.post("/login", data={"email": PHARMACIST, "password": bdb.password})
    if r.status_code != 302:
        raise SystemExit(f"sign-in failed: {r.status_code}")
    with app.test_request_context("/"):
        q = db.session.execute
        patient_id = q(sa.text("SELECT patient_id FROM orders WHERE patient_id <= 200 GROUP BY patient_id "
                               "ORDER BY count(*) DESC, patient_id LIMIT 1")).scalar_one()
        free = ("p.status = 'active' AND p.titration IS NULL AND NOT EXISTS (SELECT 1 FROM orders o WHERE "
                "o.prescription_id = p.id AND o.state NOT IN ('dispensed', 'cancelled')) AND NOT EXISTS (SELECT 1 "
                "FROM refill_requests r WHERE r.prescription_id = p.id AND r.state IN ('open', 'awaiting_renewal')) "
                "AND EXISTS (SELECT 1 FROM orders o WHERE o.prescription_id = p.id AND o.state = 'dispensed')")
        rx_ids = list(q(sa.text(f"SELECT p.id FROM prescriptions p WHERE {free} ORDER BY p.id LIMIT 2")).scalars())
        rx_id, post_rx = rx_ids[0], rx_ids[-1]
        rx_patient, dob = q(sa.text("SELECT p.patient_id, pt.date_of_birth FROM prescriptions p JOIN patients pt "
                                    "ON pt.id = p.patient_id WHERE p.id = :i"), {"i": rx_id}).one()
        # An open order, in the first of these states that has one (the page differs a little by state).
        order_id = None
        states = (order_state,) if order_state else ("compounding", "checked", "verified", "ready", "requested", "on_hold")
        for state in states:
            order_id = q(sa.text("SELECT min(id) FROM orders WHERE state = :s"), {"s": state}).scalar_one()
            if order_id is not None:
                order_state = state
                break
        token = links.make_token(links.REFILL, rx_patient, rx_id)
        uid = q(sa.text("SELECT id FROM users WHERE email = :e"), {"e": PHARMACIST}).scalar_one()
        _, bearer = issue_token(staff(uid, Role.PHARMACIST), uid, "bench queries")
        db.session.commit()
        values = {"patient_id": patient_id, "rx_id": rx_id, "order_id": order_id, "token": token}
        urls = {}
        for label, endpoint, args, query, _method in PAGES:
            if endpoint in app.view_functions and all(values[k] is not None for k in args):
                urls[label] = url_for(endpoint, **{k: values[k] for k in args}, **query)
        engine = db.engine
    dob = str(dob)[:10]
    r = client.post(f"/r/{token}", data={"month": int(dob[5:7]), "day": int(dob[8:10]), "year": int(dob[:4])})
    if r.status_code not in (302, 303):
        raise SystemExit(f"refill link confirmation failed: {r.status_code}")
    out: dict[str, Any] = {}
    for label, endpoint, _args, _query, method in PAGES:
        if label not in urls:
            out[label] = {"missing": endpoint}
            continue
        headers = {"Authorization": f"Bearer {bearer}"} if endpoint.startswith("refill-requests.") else {}
        if method == "POST":
            def call(rx: int = post_rx, url: str = urls[label], h: dict[str, str] = headers) -> Any:
                return client.post(url, json={"prescription_id": rx}, headers=h)
        else:
            def call(url: str = urls[label], h: dict[str, str] = headers) -> Any:
                return client.get(url, headers=h)
        with common.count_statements(engine) as seen:
            t0 = time.perf_counter()
            resp = call()
            ms = (time.perf_counter() - t0) * 1000
        if method == "GET" and ms < 2000:  # that was the warm-up: count a second, warm request
            with common.count_statements(engine) as seen:
                t0 = time.perf_counter()
                resp = call()
                ms = (time.perf_counter() - t0) * 1000
        out[label] = {"statements": len(seen), "ms": round(ms, 1), "status": resp.status_code}
        if endpoint == "compounding.order":
            out[label]["order_state"] = order_state
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--small", type=int, default=100)
    a = p.parse_args()
    small = measure(a.db, a.small, a.seed, a.fresh)
    # The order page at the larger size opens an order in the same state as at the smaller one.
    large = measure(a.db, a.patients, a.seed, a.fresh, order_state=small.get("order page", {}).get("order_state"))
    rows = []
    for label, *_ in PAGES:
        s, lg = small[label], large[label]
        if "missing" in s:
            rows.append([label, "—", "—", "—", "—", f"missing ({s['missing']})"])
            continue
        same = "same" if s["statements"] == lg["statements"] else "DIFFERENT"
        bad = [x for x in (s, lg) if x["status"] >= 400]
        rows.append([label, s["statements"], lg["statements"], s["ms"], lg["ms"],
                     same + (f" (HTTP {bad[0]['status']})" if bad else "")])
    print(f"\nSQL statements per request ({a.db}; {a.small:,} vs {a.patients:,} patients; target: the same)")
    print(common.table(["page", f"statements @{a.small:,}", f"statements @{a.patients:,}", f"ms @{a.small:,}",
                        f"ms @{a.patients:,}", ""], rows))
    path = common.save("queries", a.db, {"small_patients": a.small, "patients": a.patients, "small": small,
                                         "large": large})
    print(f"results in {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
