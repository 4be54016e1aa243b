"""The one writer of the supply a prescription caches: after every dispensing, from the model, in the same
transaction (so the running-out list, reminders and the refill queue never read a stale or second answer).
"""
from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import OPEN_REQUEST_STATES, RefillRequest
from pharmacy.supply import reads
from pharmacy.supply.rules import Supply


def refresh(rx: Prescription) -> Supply:
    """Recompute the prescription's supply from its dispensings and store what the lists read."""
    current = reads.recomputed_supply(rx)
    latest = reads.latest_dispensed(rx.id)
    rx.days_dispensed = current.days_dispensed
    rx.latest_fill_number = latest.fill_number if latest is not None else None
    rx.latest_days_supply = current.last_days if latest is not None else _carried_days(rx)
    rx.latest_run_out_date = current.run_out
    _open_request_follows(rx.id, current.run_out)
    db.session.flush()
    return current


def carry_over(new: Prescription, old: Prescription) -> None:
    """A replacement (renewal, dose change) starts holding what the patient still has from the old prescription:
    its run-out and the too-soon basis carry over until the new one is first dispensed."""
    new.days_dispensed = 0
    new.latest_fill_number = None
    new.latest_run_out_date = old.latest_run_out_date
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


def _carried_days(rx: Prescription) -> int | None:
    if rx.replaces_id is None:
        return None
    old = db.session.get(Prescription, rx.replaces_id)
    return old.latest_days_supply if old is not None else None
