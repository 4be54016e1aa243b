"""Auto-refill over a simulated year with the injected clock: every eligible supply asked for exactly once, on its
order-by date; a skip honoured; none when no refills remain — the renewal path instead, once."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from pharmacy.autorefill import services as autorefill
from pharmacy.autorefill.models import Cycle
from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.actor import Actor
from pharmacy.core.context import today
from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from pharmacy.refills.models import RefillRequest
from pharmacy.refills.rules import RefillRequestState, RequestSource
from pharmacy.reminders.models import OutboxMessage
from pharmacy.reminders.rules import MessageKind
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows.next_refill import next_refill
from tests import factories
from tests.reminder_helpers import morning


def test_a_year_of_auto_refills(app, staff, clock) -> None:
    with app.test_request_context("/"):
        w = factories.world(staff, refills_authorized=4)

        first = order_flow.start_fill(w["pharmacist"], w["rx"].id)
        factories.run_order_to(w, first.id, "dispensed")
        me = Actor(kind="patient", patient_id=w["patient"].id)
        autorefill.enrol(me, w["rx"].id)
        db.session.commit()
        rx_id = w["rx"].id
        start = today()
        asked_on: list[Any] = []
        order_by_days: list[Any] = []
        skipped_cycle = None
        for offset in range(1, 366):
            day = start + timedelta(days=offset)
            clock.set(morning(day))
            rx = db.session.get(type(w["rx"]), rx_id)
            nxt = next_refill(rx)
            before = {r.id for r in db.session.execute(sa.select(RefillRequest)).scalars()}
            # The patient skips the third supply's automatic refill a few days ahead.
            if len(asked_on) == 2 and skipped_cycle is None and nxt.order_by and nxt.order_by - day == timedelta(3):
                autorefill.skip_next(me, rx_id)
                skipped_cycle = nxt.order_by
            autorefill.run_due()
            db.session.commit()
            new = [r for r in db.session.execute(sa.select(RefillRequest)).scalars() if r.id not in before]
            for req in new:
                assert req.source == RequestSource.AUTO
                asked_on.append(day)
                order_by_days.append(nxt.order_by)
            # After the skip the patient asks by themselves a week later (the reminders say so).
            if skipped_cycle is not None and day == skipped_cycle + timedelta(days=7):
                refill_flow.request(factories.actor(staff["technician"]), rx_id, source=RequestSource.STAFF)
            # The pharmacy approves what is open, and dispenses as soon as it may.
            for req in db.session.execute(sa.select(RefillRequest).where(
                    RefillRequest.state == RefillRequestState.OPEN)).scalars().all():
                refill_flow.approve(w["pharmacist"], req.id)
            for o in db.session.execute(sa.select(Order).where(Order.state.not_in(
                    [OrderState.DISPENSED, OrderState.CANCELLED]))).scalars().all():
                if o.earliest_dispense_date is None or o.earliest_dispense_date <= day:
                    factories.run_order_to(w, o.id, "dispensed")
            db.session.commit()
        # Every automatic request came on its supply's order-by date, never before, never twice.
        assert asked_on == order_by_days
        outcomes = Counter(c.outcome for c in db.session.execute(sa.select(Cycle)).scalars())
        autos = db.session.execute(sa.select(RefillRequest).where(
            RefillRequest.source == RequestSource.AUTO)).scalars().all()
        # 4 refills authorized: 3 asked automatically + 1 asked by the patient after the skip; then the renewal path.
        assert outcomes["skipped"] == 1
        assert sum(1 for r in autos if r.state == RefillRequestState.APPROVED) == 3
        renewal = [r for r in autos if r.state == RefillRequestState.AWAITING_RENEWAL]
        assert len(renewal) == 1 and outcomes["renewal"] == 1
        # The patient was told each time: a notice with a skip link per automatic refill, one about the renewal.
        kinds = Counter(m.kind for m in db.session.execute(sa.select(OutboxMessage).where(
            OutboxMessage.refill_request_id.in_([r.id for r in autos]))).scalars() if m.state.value != "cancelled")
        assert kinds[MessageKind.AUTO_REFILL_REQUESTED] == 3 and kinds[MessageKind.RENEWAL_IN_PROGRESS] == 1
        actions = Counter(db.session.execute(sa.select(AuditEvent.action).where(
            AuditEvent.action.like("autorefill.%"))).scalars())
        assert actions["autorefill.enrol"] == 1 and actions["autorefill.skip"] == 1
        assert actions["autorefill.request"] == 4
