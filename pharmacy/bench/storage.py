"""How the generator's values are stored: dates, instants and flags as each database's column types write them
(so the benchmarks' range scans and comparisons behave as on rows the app wrote), and a buffer per table with the
columns the generator fills."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import cache, lru_cache
from typing import Any

import sqlalchemy as sa

from pharmacy.bench.writer import Sink, Writer
from pharmacy.extensions import db


class Stored:
    """`at(day, hour, minute)`: a local time of day as the stored UTC instant; `d`: a date; `b`: a flag; `instant`:
    an aware datetime. PostgreSQL takes Python values (COPY); SQLite the exact text SQLAlchemy's types write."""

    def __init__(self, pg: bool, tz: Any) -> None:
        @cache
        def hour_utc(day: date, hour: int) -> datetime:
            return datetime.combine(day, dtime(hour), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)

        if pg:
            def at(day: date, hour: int, minute: int = 0) -> Any:
                base = hour_utc(day, hour)
                return base + timedelta(minutes=minute) if minute else base

            self.d: Callable[[date | None], Any] = lambda x: x
            self.b: Callable[[bool], Any] = lambda x: x
            self.true: Any = True
            self.instant: Callable[[datetime], Any] = lambda x: x.astimezone(UTC).replace(tzinfo=None)
        else:
            # The exact text SQLAlchemy's SQLite types write, so ranges and comparisons behave the same.
            @cache
            def hour_text(day: date, hour: int) -> str:
                return f"{hour_utc(day, hour):%Y-%m-%d %H:%M:%S}.000000"

            minutes = [f"{m:02d}" for m in range(60)]

            def at(day: date, hour: int, minute: int = 0) -> Any:
                base = hour_text(day, hour)
                if not minute:
                    return base
                if base[14:16] == "00":  # a whole-hour UTC offset: the minutes carry over unchanged
                    return base[:14] + minutes[minute] + base[16:]
                return f"{hour_utc(day, hour).replace(minute=0) + timedelta(minutes=minute):%Y-%m-%d %H:%M:%S}.000000"

            self.d = lru_cache(maxsize=4096)(lambda x: None if x is None else x.isoformat())
            self.b = lambda x: int(x)
            self.true = 1
            self.instant = lambda x: f"{x.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{x.microsecond:06d}"
        self.at: Callable[..., Any] = at


@dataclass(frozen=True)
class Tables:
    """The sink of each table the generator writes."""

    patients: Sink
    effects: Sink
    rx: Sink
    renewals: Sink
    orders: Sink
    lots: Sink
    alerts: Sink
    requests: Sink
    payments: Sink
    outbox: Sink
    attempts: Sink


def open_tables(conn: sa.Connection, batch_size: int) -> tuple[Writer, Tables]:
    """A buffer per table the generator writes, with the columns it fills, in the writer's (foreign-key) order."""
    md = db.metadata.tables
    w = Writer(conn, batch_size)
    tables = Tables(  # keyword arguments are evaluated in order: the sinks' order is the writer's
        patients=w.sink(md["patients"], (
            "id", "first_name", "last_name", "name_key", "date_of_birth", "email", "phone", "address_line1",
            "address_line2", "city", "state", "postal_code", "conditions", "medications", "allergies",
            "reminders_opt_in", "delivery_preference", "shipping_days", "notes", "created_at", "updated_at")),
        effects=w.sink(md["side_effects"], (
            "id", "patient_id", "effect", "noted_on", "note", "suggested_action", "recorded_by_id", "created_at")),
        rx=w.sink(md["prescriptions"], (
            "id", "rx_number", "patient_id", "prescriber_id", "formula_id", "dose_mcg", "titration", "dosing_time",
            "quantity_milli", "days_supply", "refills_authorized", "written_date", "expiry_date", "directions",
            "indication", "indication_code", "status", "status_reason", "replaces_id", "created_by_id", "created_at",
            "updated_at", "latest_fill_number", "latest_run_out_date", "days_dispensed", "latest_days_supply",
            "latest_covered_from", "prior_run_out_date")),
        renewals=w.sink(md["renewal_requests"], (
            "id", "prescription_id", "prescriber_id", "patient_id", "state", "reason", "created_at", "sent_at",
            "sent_by_id", "resolved_at", "new_prescription_id")),
        orders=w.sink(md["orders"], (
            "id", "prescription_id", "patient_id", "fill_number", "state", "held_from", "state_changed_at",
            "quantity_milli", "days_supply", "cap_note", "earliest_dispense_date", "delivery_method", "carrier",
            "tracking_number", "lot_number", "bud", "quantity_made_milli", "qc_yield_milli", "qc_passed", "qc_notes",
            "verified_by_id", "verified_at", "compounded_by_id", "compounded_at", "checked_by_id", "checked_at",
            "released_by_id", "released_at", "dispensed_by_id", "dispensed_at", "dispensed_on", "run_out_date",
            "hold_reason", "cancel_reason", "price_cents", "shipping_cents", "price_entry_id", "created_by_id",
            "created_at", "updated_at", "authorized_fill", "supply_starts_on", "batch_planned_at",
            "batch_planned_by_id")),
        lots=w.sink(md["order_ingredient_lots"], (
            "id", "order_id", "ingredient_lot_id", "quantity_used_milli", "unit")),
        alerts=w.sink(md["screening_alerts"], (
            "id", "prescription_id", "order_id", "code", "severity", "message", "created_at", "current",
            "resolved_by_id", "resolved_at", "resolution_reason")),
        requests=w.sink(md["refill_requests"], (
            "id", "prescription_id", "patient_id", "state", "source", "delivery_method", "requested_at",
            "requested_by_id", "decided_at", "decided_by_id", "decline_reason", "order_id", "renewal_id", "note",
            "run_out_date")),
        payments=w.sink(md["payments"], (
            "id", "patient_id", "order_id", "kind", "method", "amount_cents", "received_at", "reference", "note",
            "recorded_by_id")),
        outbox=w.sink(md["outbox"], (
            "id", "dedupe_key", "kind", "patient_id", "prescription_id", "order_id", "refill_request_id",
            "renewal_id", "to_address", "due_at", "state", "next_attempt_at", "lease_until", "claimed_by",
            "attempts", "last_error", "sent_at", "cancelled_reason", "message_id", "subject", "body_text",
            "body_html", "created_at")),
        attempts=w.sink(md["delivery_attempts"], ("id", "message_id", "at", "result", "detail")),
    )
    return w, tables
