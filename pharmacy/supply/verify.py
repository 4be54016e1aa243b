"""The supply each prescription caches, checked against a walk of every dispensing (`flask supply verify`).

The lists (Today's running-out list, the refill queue, reminders, the patient page) read the supply from columns the
prescription caches, written by the supply's one writer (services.refresh) in the same transaction as each
dispensing. This walks every prescription's dispensed orders through the same model (rules.supply) — prescriptions in
id order, so a replacement follows what it carried — and names the prescriptions whose cached columns differ.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from pharmacy.supply import rules

#: The cached columns, in the order `expected` gives them.
CACHED = ("days_dispensed", "latest_fill_number", "latest_days_supply", "latest_run_out_date",
          "latest_covered_from", "prior_run_out_date")

_STREAM = 10_000


@dataclass(frozen=True)
class Mismatch:
    """A prescription whose cached supply is not what its dispensings give: its id and the columns that differ."""

    rx_id: int
    columns: tuple[str, ...]


def _dispensings() -> dict[int, tuple[list[rules.Dispensing], int]]:
    """Each prescription's dispensings and its latest dispensed fill number, streamed from the orders."""
    out: dict[int, tuple[list[rules.Dispensing], int]] = {}
    starts = sa.func.coalesce(Order.supply_starts_on, Order.dispensed_on)
    stmt = (sa.select(Order.prescription_id, Order.fill_number, starts, Order.days_supply)
            .where(Order.state == OrderState.DISPENSED).order_by(Order.prescription_id, Order.fill_number)
            .execution_options(yield_per=_STREAM))  # fill order, as the writer reads them: ties keep the same order
    for rx_id, number, starts_on, days in db.session.execute(stmt):
        fills, latest = out.get(rx_id, ([], number))
        if starts_on is not None:
            fills.append(rules.Dispensing(starts_on=starts_on, days=days))
        out[rx_id] = (fills, max(latest, number))
    return out


def _expected(row: Any, fills: list[rules.Dispensing], latest: int | None,
              carried: tuple[rules.Held, int | None]) -> tuple[Any, ...]:
    auth = rules.Authorization(days_per_fill=row.days_supply, refills=row.refills_authorized,
                               expiry_date=row.expiry_date)
    held, carried_days = carried
    current = rules.supply(auth, fills, carried=held)
    return (current.days_dispensed, latest, current.last_days if latest is not None else carried_days,
            current.run_out, current.covered_from, current.prior_run_out)


def mismatches() -> Iterator[Mismatch]:
    """Every prescription whose cached supply differs from a walk of its dispensings (read only)."""
    dispensed = _dispensings()
    walked: dict[int, tuple[rules.Held, int | None]] = {}
    stmt = (sa.select(Prescription.id, Prescription.replaces_id, Prescription.days_supply,
                      Prescription.refills_authorized, Prescription.expiry_date,
                      *(getattr(Prescription, name) for name in CACHED))
            .order_by(Prescription.id).execution_options(yield_per=_STREAM))
    for row in db.session.execute(stmt):
        carried = walked.get(row.replaces_id, (rules.Held(), None)) if row.replaces_id is not None else (
            rules.Held(), None)
        fills, latest = dispensed.pop(row.id, ([], None))
        expected = _expected(row, fills, latest, carried)
        walked[row.id] = (rules.Held(expected[3], expected[4], expected[5]), expected[2])
        cached = tuple(getattr(row, name) for name in CACHED)
        cached = (cached[0] or 0, *cached[1:])
        differ = tuple(name for name, want, have in zip(CACHED, expected, cached, strict=True) if want != have)
        if differ:
            yield Mismatch(row.id, differ)
