"""The present of each generated patient: the open work a pharmacy has today (a refill request waiting, an order in
some step of the workflow, a renewal asked of the prescriber, an order cancelled when the patient stopped) and the
reminders planned for the latest fill — exactly the pending rows `reminders.planning.plan_messages` would plan, so a
re-plan of the generated data changes nothing."""
from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pharmacy.bench.records import Fill, PatientFacts, Rx
from pharmacy.compounding import rules as comp_rules
from pharmacy.compounding.rules import DeliveryMethod, OrderState
from pharmacy.prescriptions.rules import RxStatus
from pharmacy.refills.rules import RefillRequestState, RenewalState, RequestSource
from pharmacy.reminders import planning
from pharmacy.reminders.rules import MessageKind, OutboxState
from pharmacy.supply import rules as supply_rules

if TYPE_CHECKING:
    from pharmacy.bench.generator import Generator

OPEN_STATES = (OrderState.REQUESTED, OrderState.VERIFIED, OrderState.COMPOUNDING, OrderState.CHECKED,
               OrderState.READY, OrderState.ON_HOLD)


def current(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx) -> None:
    if rx.status != RxStatus.ACTIVE:
        if rx.status == RxStatus.DISCONTINUED and rx.fills and rng.random() < 0.5:
            cancelled_order(g, rng, p, rx)
        return
    if not rx.fills:
        return
    last = rx.fills[-1]
    held = rx.held(g.cfg.too_soon_percent)
    assert held.run_out is not None
    run_out = held.run_out
    refills_left = 1 if held.days_remaining else 0
    unexpired = g.today <= rx.expiry
    roll = rng.random()
    soon = (run_out - g.today).days <= 12
    if soon and unexpired and refills_left > 0 and roll < 0.12:
        open_order(g, rng, p, rx, last)
        return
    if soon and unexpired and refills_left > 0 and roll < 0.2:
        open_request(g, rng, p, rx, last, RefillRequestState.OPEN)
        return
    if soon and refills_left <= 0 and roll < 0.25:
        open_request(g, rng, p, rx, last, RefillRequestState.AWAITING_RENEWAL)
        return
    planned(g, rng, p, rx, last)


def fill_facts(g: Generator, p: PatientFacts, rx: Rx, fill: Fill) -> planning.FillFacts:
    held = rx.held(g.cfg.too_soon_percent)
    assert held.run_out is not None
    return planning.FillFacts(
        order_id=fill.order_id, prescription_id=rx.id, patient_id=p.id, prescriber_id=rx.prescriber_id,
        run_out=held.run_out, delivery_method=fill.method, shipping_days=p.shipping_days, opted_in=p.opted_in,
        has_email=p.has_email, lead_time=rx.formula.lead_time, days_per_fill=rx.days_supply,
        refills_authorized=rx.refills, expiry_date=rx.expiry, days_dispensed=held.days_dispensed)


def planned(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx, last: Fill) -> None:
    """Exactly what planning.plan_for_order would leave for this fill today, plus its sent history."""
    facts = fill_facts(g, p, rx, last)
    pending = planning.plan_messages(facts, day=g.today)
    keys = {m.key for m in pending}
    recent = g.today - timedelta(days=7)
    for m in planning.plan_messages(facts, day=last.dispensed_on):
        if m.key not in keys and m.local_day < g.today:
            due = g.instant(m.send_at)
            key = f"fill:{last.order_id}:{m.key}"
            variant = rng.random() if m.local_day >= recent else 1.0
            if variant < 0.06:  # the mail server refused it: the pharmacist sees it on the dashboard
                g.outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.FAILED, due=due,
                             error="550: mailbox unavailable", attempts=1)
            elif variant < 0.09:  # a scheduler died while sending it: the lease has expired
                g.outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.SENDING, due=due,
                             lease=g.instant(g.now - timedelta(minutes=20)), claimed_by="bench:dead-worker")
            else:
                g.outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.SENT, due=due,
                             sent=g.instant(m.send_at + timedelta(seconds=30)))
    renewal_id = None
    for m in pending:
        if m.kind == MessageKind.RENEWAL_NEEDED and renewal_id is None:
            renewal_id = renewal_task(g, rng, p, rx)
        g.outbox(p, rx, m.kind, f"fill:{last.order_id}:{m.key}", order_id=last.order_id,
                     state=OutboxState.PENDING, due=g.instant(m.send_at), created=g.at(last.handed_on, 12))


def renewal_task(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx) -> int:
    rid = g.next_id("renewal_requests")
    sent = rng.random() < 0.3
    g.out.renewals.add(
        id=rid, prescription_id=rx.id, prescriber_id=rx.prescriber_id, patient_id=p.id,
        state=(RenewalState.SENT if sent else RenewalState.NEEDED).value,
        reason="no refills left or expires before run-out", created_at=g.at(g.today - timedelta(days=1), 10),
        sent_at=g.at(g.today - timedelta(days=1), 14) if sent else None,
        sent_by_id=g.staff["pharmacist"] if sent else None, resolved_at=None, new_prescription_id=None)
    if sent:
        g.outbox(p, rx, MessageKind.PRESCRIBER_RENEWAL, f"prescriber_renewal:{rid}", state=OutboxState.SENT,
                     due=g.at(g.today - timedelta(days=1), 14), sent=g.at(g.today - timedelta(days=1), 14, 1),
                     renewal_id=rid, to_address="renewals@clinic.example")
    return rid


def cancel_reminders(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx, last: Fill, reason: str,
                      renewal_id: int | None = None) -> None:
    """The last fill's reminders once a refill is ordered (all cancelled) or requested (the renewal stays)."""
    facts = fill_facts(g, p, rx, last)
    for m in planning.plan_messages(facts, day=g.today - timedelta(days=2)):
        key = f"fill:{last.order_id}:{m.key}"
        if m.kind == MessageKind.RENEWAL_NEEDED and reason == "refill requested":
            if renewal_id is None:
                renewal_id = renewal_task(g, rng, p, rx)
            g.outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.PENDING,
                         due=g.instant(m.send_at), created=g.at(last.handed_on, 12))
            continue
        g.outbox(p, rx, m.kind, key, order_id=last.order_id, state=OutboxState.CANCELLED,
                     due=g.instant(m.send_at), reason=reason, created=g.at(last.handed_on, 12))


def open_request(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx, last: Fill, state: RefillRequestState) -> None:
    req_id = g.next_id("refill_requests")
    day = g.today - timedelta(days=rng.choice((1, 1, 2, 3)))
    renewal_id = renewal_task(g, rng, p, rx) if state == RefillRequestState.AWAITING_RENEWAL else None
    source = rng.choice((RequestSource.LINK, RequestSource.LINK, RequestSource.API, RequestSource.STAFF))
    g.out.requests.add(
        id=req_id, prescription_id=rx.id, patient_id=p.id, state=state.value, source=source.value,
        delivery_method=last.method.value, requested_at=g.at(day, 8, rng.randrange(60)),
        requested_by_id=g.staff["technician"] if source == RequestSource.STAFF else None, decided_at=None,
        decided_by_id=None, decline_reason=None, order_id=None, renewal_id=renewal_id, note=None,
        run_out_date=g.d(rx.held(g.cfg.too_soon_percent).run_out))  # the prescription's, as the services keep it
    if p.has_email:
        kind = MessageKind.RENEWAL_IN_PROGRESS if renewal_id else MessageKind.REQUEST_RECEIVED
        if rng.random() < 0.1:  # the mail server timed out: pending again, retried with a backoff
            g.outbox(p, rx, kind, f"{kind.value}:request:{req_id}", state=OutboxState.PENDING,
                         due=g.at(day, 9), request_id=req_id, attempts=1, error="connection: TimeoutError",
                         next_attempt=g.instant(g.now + timedelta(minutes=5)))
        else:
            g.outbox(p, rx, kind, f"{kind.value}:request:{req_id}", state=OutboxState.SENT,
                         due=g.at(day, 9), sent=g.at(day, 9, 1), request_id=req_id)
    cancel_reminders(g, rng, p, rx, last, "refill requested", renewal_id)


def open_order(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx, last: Fill) -> None:
    state = OPEN_STATES[rng.randrange(len(OPEN_STATES))]
    number = len(rx.fills)
    order_id = g.next_id("orders")
    day = g.today - timedelta(days=rng.choice((1, 1, 2, 3, 4)))
    method = last.method
    quantity = rx.maintenance_quantity
    price, ship, entry = g.price(rx.formula, quantity, method, day)
    staff, at = g.staff, g.at
    done = OPEN_STATES.index(state if state != OrderState.ON_HOLD else OrderState.VERIFIED)
    v: dict[str, Any] = {}
    if done >= 1:
        v.update(verified_by_id=staff["pharmacist"], verified_at=at(day, 11))
    if done >= 2:
        lots = g.catalog.lots_on(rx.formula, day)
        bud = comp_rules.beyond_use_date(rx.formula.category, day, [x[1] for x in lots])
        v.update(lot_number=g.lot_number(day), bud=g.d(bud), quantity_made_milli=int(quantity * 1000),
                 compounded_by_id=staff["technician"], compounded_at=at(day, 13))
        for lot_id, _e, _n, amount, unit, per in lots:
            g.out.lots.add(id=g.next_id("order_ingredient_lots"), order_id=order_id, ingredient_lot_id=lot_id,
                            quantity_used_milli=int(amount * quantity / per * 1000), unit=unit)
    if done >= 3:
        v.update(qc_yield_milli=100_000, qc_passed=g.b(True), checked_by_id=staff["checker"],
                 checked_at=at(day, 15))
    if done >= 4:
        v.update(released_by_id=staff["checker"], released_at=at(day, 16))
    if state == OrderState.ON_HOLD:
        v.update(held_from=OrderState.VERIFIED.value, hold_reason="Waiting for the prescriber to confirm the dose")
    earliest = rx.held(g.cfg.too_soon_percent).earliest_next_start  # as compounding/services.create_order
    if earliest is not None and method == DeliveryMethod.SHIP:
        earliest = supply_rules.earliest_leaving_day(earliest, p.shipping_days)
    g.out.orders.add(
        id=order_id, prescription_id=rx.id, patient_id=p.id, fill_number=number,
        authorized_fill=rx.held(g.cfg.too_soon_percent).current_fill or 0, state=state.value,
        state_changed_at=at(day, 16), quantity_milli=int(quantity * 1000), days_supply=rx.days_supply,
        earliest_dispense_date=g.d(earliest), delivery_method=method.value, price_cents=price,
        shipping_cents=ship, price_entry_id=entry, created_by_id=staff["pharmacist"],
        created_at=at(day, 9, rng.randrange(60)), updated_at=at(day, 16), **v)
    rx.fills.append(Fill(order_id, number, day, day, rx.days_supply, method, price + ship))
    if rng.random() < 0.6:
        req_id = g.next_id("refill_requests")
        g.out.requests.add(
            id=req_id, prescription_id=rx.id, patient_id=p.id, state=RefillRequestState.APPROVED.value,
            source=RequestSource.LINK.value, delivery_method=method.value, requested_at=at(day, 8),
            requested_by_id=None, decided_at=at(day, 9), decided_by_id=staff["pharmacist"], decline_reason=None,
            order_id=order_id, renewal_id=None, note=None, run_out_date=None)
        if p.has_email:
            g.outbox(p, rx, MessageKind.REQUEST_APPROVED, f"request_approved:request:{req_id}",
                         state=OutboxState.SENT, due=at(day, 9), sent=at(day, 9, 1), request_id=req_id)
    if state == OrderState.READY and method == DeliveryMethod.PICKUP and p.has_email:
        g.outbox(p, rx, MessageKind.ORDER_READY, f"order_ready:order:{order_id}", order_id=order_id,
                     state=OutboxState.SENT, due=at(day, 16), sent=at(day, 16, 1))
    cancel_reminders(g, rng, p, rx, last, "refill ordered")


def cancelled_order(g: Generator, rng: random.Random, p: PatientFacts, rx: Rx) -> None:
    last = rx.fills[-1]
    day = last.handed_on + timedelta(days=rng.randint(20, 28))
    if day > g.today:
        return
    quantity = rx.maintenance_quantity
    price, ship, entry = g.price(rx.formula, quantity, last.method, day)
    g.out.orders.add(
        id=g.next_id("orders"), prescription_id=rx.id, patient_id=p.id, fill_number=len(rx.fills),
        authorized_fill=rx.held(g.cfg.too_soon_percent).current_fill or 0,
        state=OrderState.CANCELLED.value, state_changed_at=g.at(day, 15), quantity_milli=int(quantity * 1000),
        days_supply=rx.days_supply, delivery_method=last.method.value, cancel_reason="Patient stopped LDN therapy",
        price_cents=price, shipping_cents=ship, price_entry_id=entry, created_by_id=g.staff["pharmacist"],
        created_at=g.at(day, 9), updated_at=g.at(day, 15))
