"""The 14-day production plan at chain scale: the page (/production) in ≤ 1 s with the same number of SQL statements
at 100 and at 100,000 patients.

    .venv/bin/python benchmarks/bench_production.py --db sqlite --patients 100000
    .venv/bin/python benchmarks/bench_production.py --db postgres --patients 100000

Each size's database is generated once (`flask bench seed`, see common.py). The generator keeps no stock, so the
first run receives a quantity for every ingredient lot through inventory's own service (one receipt each) and sets
reorder points. Then, in-process as the bench pharmacist with the clock at 12:00 on the data's day:
- the page /production and its CSV, and the Today page that carries today's block — median of 5 after a warm-up —
  with their statement counts;
- the plan alone (`production.services.build`), the same work without the page;
- the baseline, same run: the bare indexed select of the prescriptions in the plan's run-out window (the rows the
  plan's largest statement groups), which no plan can beat.
Target: the page ≤ 1 s; the statement counts equal at 100 and at N patients.
"""
from __future__ import annotations

import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from benchmarks import common

PHARMACIST = "bench-pharmacist@pharmacy.example"
AMOUNTS = {"mg": Decimal(500_000), "g": Decimal(20_000), "each": Decimal(500_000), "mL": Decimal(200_000)}
TARGET_MS = 1000.0


def _stock(app: Any) -> int:
    """A receipt for every lot without stock kept, and a reorder point per ingredient (first run only)."""
    from pharmacy.compounding.models import IngredientLot
    from pharmacy.core.actor import Actor
    from pharmacy.core.roles import Role
    from pharmacy.extensions import db
    from pharmacy.inventory import services as inventory
    from pharmacy.inventory.models import LotStock

    with app.test_request_context("/"):
        tech = Actor(kind="staff", role=Role.TECHNICIAN)
        rows = db.session.execute(sa.select(IngredientLot.id, IngredientLot.ingredient_name).where(
            IngredientLot.id.not_in(sa.select(LotStock.ingredient_lot_id)))).all()
        for lot_id, name in rows:
            unit = inventory.ingredient_unit(name) or "g"
            inventory.receive(tech, lot_id, AMOUNTS[unit], unit)
        for name in {name for _, name in rows}:
            unit = inventory.ingredient_unit(name) or "g"
            inventory.set_reorder_point(tech, name, AMOUNTS[unit] / 10, unit=unit)
        db.session.commit()
        return len(rows)


def _timed_get(client: Any, url: str, repeat: int = 5) -> tuple[float, int]:
    seconds, response = common.timed(lambda: client.get(url), repeat=repeat)
    return seconds * 1000, response.status_code


def measure(kind: str, patients: int, seed: int, fresh: bool) -> dict[str, Any]:
    bdb = common.prepare(kind, patients, seed=seed, fresh=fresh)
    app = common.app_for(bdb, bdb.at(12))
    app.config["WTF_CSRF_ENABLED"] = False
    received = _stock(app)
    from pharmacy.core.context import today
    from pharmacy.extensions import db
    from pharmacy.production import services as production

    client = app.test_client()
    if client.post("/login", data={"email": PHARMACIST, "password": bdb.password}).status_code != 302:
        raise SystemExit("sign-in failed")
    out: dict[str, Any] = {"patients": patients, "lots_received": received}
    with app.app_context():
        engine = db.engine
    for label, url in (("plan page", "/production"), ("plan CSV", "/production.csv"), ("Today page", "/")):
        ms, status = _timed_get(client, url)
        with common.count_statements(engine) as seen:
            client.get(url)
        out[label] = {"ms": round(ms, 1), "status": status, "statements": len(seen)}
    with app.test_request_context("/"):
        seconds, plan = common.timed(production.build, repeat=5)
        out["plan built"] = {"ms": round(seconds * 1000, 1), "preparations": plan.total,
                             "days over capacity": len([d for d in plan.days if d.overloaded])}
        day = today()
        window = (day - timedelta(days=7), day + timedelta(days=60))
        bare = sa.text("SELECT id FROM prescriptions WHERE status = 'active' AND latest_run_out_date BETWEEN :a AND :b")
        seconds, rows = common.timed(lambda: db.session.execute(bare, {"a": window[0], "b": window[1]}).all(),
                                     repeat=5)
        out["baseline: bare select of the window"] = {"ms": round(seconds * 1000, 1), "rows": len(rows)}
    return out


def main() -> None:
    p = common.parser("The production plan at chain scale")
    p.add_argument("--small", type=int, default=100, help="the size whose statement counts must be the same")
    a = p.parse_args()
    small = measure(a.db, a.small, a.seed, False)
    large = measure(a.db, a.patients, a.seed, a.fresh)
    rows = []
    for label in ("plan page", "plan CSV", "Today page"):
        rows.append([label, f"{large[label]['ms']}", str(large[label]["statements"]),
                     str(small[label]["statements"]), "yes" if large[label]["statements"] ==
                     small[label]["statements"] else "NO"])
    rows.append(["plan built (no page)", f"{large['plan built']['ms']}", "", "", ""])
    base = large["baseline: bare select of the window"]
    rows.append([f"baseline: bare select ({base['rows']} rows)", f"{base['ms']}", "", "", ""])
    print(common.table(["what", f"ms @{a.patients}", f"statements @{a.patients}", f"statements @{a.small}",
                        "same"], rows))
    page_ms = large["plan page"]["ms"]
    verdict = "met" if page_ms <= TARGET_MS else "MISSED"
    print(f"plan page {page_ms} ms at {a.patients} patients (target ≤ {TARGET_MS:.0f} ms): {verdict}; "
          f"{large['plan built']['preparations']} preparations in 14 business days, "
          f"{large['plan built']['days over capacity']} days over capacity")
    path = common.save("production", a.db, {"large": large, "small": small, "target_ms": TARGET_MS})
    print(f"saved {path}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
