"""The one writer of the supply a prescription caches: after every dispensing, from the model, in the same
transaction (so the running-out list, reminders and the refill queue never read a stale or second answer).
"""
from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.supply import reads, rules
from pharmacy.supply.rules import Supply


def refresh(rx: Prescription) -> Supply:
    """Recompute the prescription's supply from its dispensings and store what the lists read — and each fill's
    "supply lasts through" (the last day covered once it joined the supply), which a fill returned before it, or of
    the prescription it replaced, moves."""
    fills = reads.dispensed_fills(rx.id)
    current = reads.recomputed_supply(rx, fills)
    _fills_follow(rx, fills)
    latest = reads.latest_dispensed(rx.id)
    rx.days_dispensed = current.days_dispensed
    rx.latest_fill_number = latest.fill_number if latest is not None else None
    rx.latest_days_supply = current.last_days if latest is not None else _carried_days(rx)
    rx.latest_run_out_date = current.run_out
    rx.latest_covered_from = current.covered_from
    rx.prior_run_out_date = current.prior_run_out
    _open_request_follows(rx.id, current.run_out)
    db.session.flush()
    return current


def refresh_with_successors(rx: Prescription) -> Supply:
    """Refresh a prescription and then every replacement that carries its supply, down the chain in order.

    Why: a replacement holds the run-out it carried from the one it replaced (carry_over, then reads.carried
    at each refresh). When the replaced prescription's own supply changes afterwards — a fill of it returned, a
    parcel lost before the dose change — its successors' cached run-outs must move with it, or their reminders
    and the running-out list keep the days that were taken back."""
    held = refresh(rx)
    parents = [rx.id]
    for _ in range(50):  # a chain of replacements is short; the bound only guards against a corrupt cycle
        successors = list(db.session.execute(
            sa.select(Prescription).where(Prescription.replaces_id.in_(parents)).order_by(Prescription.id)
        ).scalars())
        if not successors:
            break
        for successor in successors:
            refresh(successor)
        parents = [s.id for s in successors]
    return held


def carry_over(new: Prescription, old: Prescription) -> None:
    """A replacement (renewal, dose change) starts holding what the patient still has from the old prescription:
    its run-out and the too-soon basis carry over until the new one is first dispensed."""
    new.days_dispensed = 0
    # Whose latest order the supply came from: the old one if it was dispensed, else what the old one carried
    # (a replacement replaced before its first fill), so the reminder planner finds the order through any chain.
    new.supply_source_id = old.id if old.latest_fill_number is not None else old.supply_source_id
    new.latest_fill_number = None
    new.latest_run_out_date = old.latest_run_out_date
    new.latest_covered_from = old.latest_covered_from
    new.prior_run_out_date = old.prior_run_out_date
    new.latest_days_supply = old.latest_days_supply
    db.session.flush()


def _open_request_follows(rx_id: int, run_out: date | None) -> None:
    """The request waiting on this prescription (at most one) orders the refill queue by the prescription's
    run-out (RefillRequest.run_out_date): it changes here, with it, in the same transaction. A fill started at the
    counter while the patient's request is still open moves the run-out under that request."""
    db.session.execute(
        sa.update(RefillRequest)
        .where(RefillRequest.prescription_id == rx_id, RefillRequest.state.in_(OPEN_REQUEST_STATES))
        .values(run_out_date=run_out))


def _fills_follow(rx: Prescription, fills: list[reads.DispensedFill]) -> None:
    """Each dispensed fill's stored run-out: the supply's last day covered once it joined the fills dispensed before
    it (and what the prescription carried), written only where it differs."""
    held = reads.carried(rx)
    auth = reads.authorization(rx)
    for i, fill in enumerate(fills):
        run_out = rules.supply(auth, [f.dispensing for f in fills[:i + 1]], carried=held).run_out
        if run_out != fill.run_out_date:
            order = db.session.get(Order, fill.order_id)
            if order is not None:
                order.run_out_date = run_out


def _carried_days(rx: Prescription) -> int | None:
    if rx.replaces_id is None:
        return None
    old = db.session.get(Prescription, rx.replaces_id)
    return old.latest_days_supply if old is not None else None


def _prescription_run_out() -> sa.ScalarSelect[Any]:
    """Each refill request's prescription's run-out, correlated to the request row of the enclosing statement."""
    return (sa.select(Prescription.latest_run_out_date)
            .where(Prescription.id == RefillRequest.prescription_id).scalar_subquery())


def _out_of_step() -> sa.Select[Any]:
    """Open requests whose run-out copy is not their prescription's (NULL-safe)."""
    return (sa.select(RefillRequest.id)
            .where(RefillRequest.state.in_(OPEN_REQUEST_STATES),
                   RefillRequest.run_out_date.is_distinct_from(_prescription_run_out())))


def open_requests_out_of_step() -> int:
    """How many open refill requests would sit in the wrong place in the refill queue: their run-out copy differs
    from their prescription's. Always 0 while every write goes through `refresh` and the request services; checked
    by `flask doctor` and `flask refills verify`."""
    return int(db.session.execute(sa.select(sa.func.count()).select_from(_out_of_step().subquery())).scalar_one())


def resync_open_requests() -> int:
    """Copy each open request's prescription's run-out onto it (`flask refills verify --fix`); how many changed."""
    ids = list(db.session.execute(_out_of_step()).scalars())
    if ids:
        db.session.execute(sa.update(RefillRequest).where(RefillRequest.id.in_(ids))
                           .values(run_out_date=_prescription_run_out())
                           .execution_options(synchronize_session=False))
    return len(ids)

