"""The benchmarks' own app: the three baseline routes (hello, fortunes, audited fortunes) do what benchmarks/README.md
says they cost, exist only in the bench app, and `flask bench seed` leaves the adherence snapshot filled."""
from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import Flask

from benchmarks.bench_app import AUDITED_FORTUNES, FORTUNE_ACTION, FORTUNE_ROWS, FORTUNES, HELLO, add_baselines
from pharmacy.billing.models import AdherenceSnapshot
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from tests import factories
from tests.conftest import Staff, counted_statements, login


def _patients(app: Flask, staff: dict[str, Staff], n: int) -> list[int]:
    from pharmacy.core.actor import staff as staff_actor

    with app.test_request_context("/"):
        who = staff_actor(staff["pharmacist"].id, staff["pharmacist"].role)
        ids = [factories.patient(who, last_name=f"O'Brien{chr(65 + i)}", date_of_birth=date(1960, 1, 1 + i),
                                 email=f"p{i}@example.com").id for i in range(n)]
        db.session.commit()
    return sorted(ids)


def _audit_count(app: Flask) -> int:
    with app.app_context():
        return db.session.execute(
            sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.action == FORTUNE_ACTION)).scalar_one()


def test_the_baselines_read_twelve_rows_render_them_escaped_and_audit_once(app: Flask, staff: dict[str, Staff]
                                                                          ) -> None:
    add_baselines(app)
    ids = _patients(app, staff, FORTUNE_ROWS + 2)
    client = app.test_client()

    assert client.get(HELLO).get_data(as_text=True) == "hello"

    with app.app_context():
        engine = db.engine
    with counted_statements(engine) as seen:
        r = client.get(f"{FORTUNES}/{ids[1]}")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert len(seen) == 1 and seen[0].lstrip().upper().startswith("SELECT")  # one read, nothing else
    assert html.count("<tr><td>") == FORTUNE_ROWS  # 12 rows from the second patient on: not the first, not the last
    assert f"<td>{ids[1]}</td>" in html and f"<td>{ids[0]}</td>" not in html and f"<td>{ids[-1]}</td>" not in html
    assert "O&#39;BrienB" in html and "O'BrienB" not in html  # escaped, like every template
    assert _audit_count(app) == 0  # plain fortunes audits nothing

    # Audited fortunes: staff only (an anonymous visitor goes to the sign-in page, as on every staff page) ...
    assert client.get(f"{AUDITED_FORTUNES}/{ids[0]}").status_code == 302
    login(client, staff["pharmacist"])
    r = client.get(f"{AUDITED_FORTUNES}/{ids[0]}")
    assert r.status_code == 200 and r.get_data(as_text=True).count("<tr><td>") == FORTUNE_ROWS
    # ... and each view writes exactly one audit row, committed by the unit of work.
    assert _audit_count(app) == 1
    client.get(f"{AUDITED_FORTUNES}/{ids[2]}")
    assert _audit_count(app) == 2
    with app.app_context():
        event = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == FORTUNE_ACTION)
                                   .order_by(AuditEvent.id.desc())).scalars().first()
        assert event is not None
        assert event.actor_user_id == staff["pharmacist"].id and event.patient_id == ids[2]


def test_the_baselines_are_not_in_the_product(app: Flask) -> None:
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert not any(rule.startswith("/__bench") for rule in rules)


def test_bench_seed_fills_the_adherence_snapshot(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["bench", "seed", "--patients", "12", "--seed", "3",
                                                "--password", "bench password 123"])
    assert result.exit_code == 0, result.output
    assert "adherence snapshot:" in result.output
    with app.app_context():
        snapshot = db.session.execute(sa.select(sa.func.count()).select_from(AdherenceSnapshot)).scalar_one()
        measured = db.session.execute(sa.text(
            "SELECT count(DISTINCT patient_id) FROM prescriptions WHERE status = 'active'")).scalar_one()
    assert snapshot > 0 and snapshot <= measured
