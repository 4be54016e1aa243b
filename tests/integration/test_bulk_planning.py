"""`bulk_planning.replan_all` leaves exactly what `planning.plan_for_order` on every fill leaves."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from pharmacy import create_app
from pharmacy.bench.generator import generate
from pharmacy.core.clock import FixedClock
from pharmacy.extensions import db
from pharmacy.refills.models import RenewalRequest
from pharmacy.reminders import bulk_planning, planning
from pharmacy.reminders.models import OutboxMessage

# A settings change that moves every reminder (hour), drops one (the 7-day offset) and adds one (5 days).
CHANGED = {"REMINDER_SEND_HOUR": "11", "REMINDER_OFFSETS_DAYS": "5,3,0", "SAFETY_BUFFER_DAYS": "3"}


def _snapshot() -> dict[str, Any]:
    rows = db.session.execute(
        sa.select(OutboxMessage.dedupe_key, OutboxMessage.kind, OutboxMessage.state, OutboxMessage.due_at,
                  OutboxMessage.next_attempt_at, OutboxMessage.cancelled_reason, OutboxMessage.patient_id,
                  OutboxMessage.prescription_id, OutboxMessage.order_id, OutboxMessage.attempts)
        .order_by(OutboxMessage.dedupe_key)).all()
    renewals = db.session.execute(
        sa.select(RenewalRequest.prescription_id, RenewalRequest.state, RenewalRequest.reason,
                  RenewalRequest.prescriber_id, RenewalRequest.patient_id)
        .order_by(RenewalRequest.prescription_id, RenewalRequest.id)).all()
    ids = db.session.execute(sa.select(OutboxMessage.id, OutboxMessage.dedupe_key, OutboxMessage.message_id)).all()
    from pharmacy.reminders import outbox, rules

    bad_ids = [i for i, key, mid in ids if not mid.startswith("<pending.") and
               mid != rules.message_id(i, key, outbox.mail_domain())]
    return {"outbox": [tuple(r) for r in rows], "renewals": [tuple(r) for r in renewals], "bad_message_ids": bad_ids}


def _one_by_one() -> None:
    for batch in planning.latest_fill_facts(500):
        for f in batch:
            planning.plan_for_order(f.order_id)


@pytest.fixture
def apps(app: Flask, app_config: dict, clock: FixedClock) -> tuple[Flask, Flask]:
    with app.app_context():
        generate(patients=80, seed=3, password="bench password 123")
    changed = create_app({**app_config, **CHANGED}, clock=clock)
    yield app, changed
    with changed.app_context():
        db.session.remove()
        db.engine.dispose()


def _run(apps: tuple[Flask, Flask], how: str) -> tuple[dict[str, Any], list[bulk_planning.ReplanReport]]:
    """Re-plan under the changed settings, then back under the original ones; snapshot; roll everything back."""
    reports = []
    for a in (apps[1], apps[0]):
        with a.test_request_context("/"):
            if how == "bulk":
                reports.append(bulk_planning.replan_all(batch_size=37, commit=False))
            else:
                _one_by_one()
            db.session.flush()
            db.session.commit()
    with apps[0].app_context():
        snap = _snapshot()
    return snap, reports


def test_bulk_replan_matches_plan_for_order(apps: tuple[Flask, Flask], app_config: dict) -> None:
    with apps[0].app_context():
        before = _snapshot()
    # Path 1: the product's one-fill-at-a-time planner, then restore the database from the snapshot copy.
    one, _ = _run(apps, "one")
    _restore(apps[0], before)
    bulk, reports = _run(apps, "bulk")
    assert one["bad_message_ids"] == [] and bulk["bad_message_ids"] == []
    assert bulk["renewals"] == one["renewals"]
    assert bulk["outbox"] == one["outbox"]
    changed, back = reports
    assert changed.added and changed.moved and changed.cancelled and changed.blocked
    assert back.revived and back.cancelled and back.moved
    assert back.added == 0


def _restore(app: Flask, snap: dict[str, Any]) -> None:
    """Undo a re-plan: delete rows it added, put every other row back as it was (outbox and renewals)."""
    with app.app_context():
        keys = {r[0]: r for r in snap["outbox"]}
        t = OutboxMessage.__table__
        for key, _kind, state, due, nxt, reason, *_rest in snap["outbox"]:
            db.session.execute(sa.update(t).where(t.c.dedupe_key == key).values(
                state=state, due_at=due, next_attempt_at=nxt, cancelled_reason=reason))
        extra = [k for k in db.session.execute(sa.select(t.c.dedupe_key)).scalars() if k not in keys]
        if extra:
            db.session.execute(sa.delete(t).where(t.c.dedupe_key.in_(extra)))
        wanted = {(r[0], r[1]) for r in snap["renewals"]}
        rt = RenewalRequest.__table__
        for rid, rx, state in db.session.execute(sa.select(rt.c.id, rt.c.prescription_id, rt.c.state)).all():
            if (rx, state) not in wanted:
                db.session.execute(sa.delete(rt).where(rt.c.id == rid))
        db.session.commit()
        assert _snapshot()["outbox"] == snap["outbox"]
        assert _snapshot()["renewals"] == snap["renewals"]


def test_flask_reminders_replan_is_the_bulk_planner(apps: tuple[Flask, Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """The command walks every active prescription in batches (committed one by one) and leaves what the per-fill
    planner leaves; a batch larger than an IN (…) list may be is read in chunks."""
    with apps[0].app_context():
        before = _snapshot()
    one, _ = _run(apps, "one")
    _restore(apps[0], before)
    monkeypatch.setattr(bulk_planning, "IN_CHUNK", 3)
    outputs = []
    for a in (apps[1], apps[0]):
        result = a.test_cli_runner().invoke(args=["reminders", "replan", "--batch-size", "1000"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    with apps[0].app_context():
        after = _snapshot()
        active = bulk_planning.active_prescriptions()
    assert after["outbox"] == one["outbox"] and after["renewals"] == one["renewals"]
    assert "Re-planning prescriptions" in outputs[0]
    assert f"{active} prescription(s)," in outputs[0] and "moved" in outputs[0]
    too_big = apps[0].test_cli_runner().invoke(args=["reminders", "replan", "--batch-size", "50001"])
    assert too_big.exit_code == 2 and "50001" in too_big.output
