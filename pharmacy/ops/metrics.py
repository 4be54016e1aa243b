"""Prometheus metrics: request latency per endpoint, and the state of the pharmacy's work.

Two kinds of numbers:
- **per process**: the request latency histogram, labelled by the Flask endpoint *name*
  (`patients.detail`, never `/patients/42`), method and status class (2xx…5xx). With several
  gunicorn workers each process holds its own counts; when `PROMETHEUS_MULTIPROC_DIR` is set
  (gunicorn.conf.py sets it for more than one worker) prometheus_client writes them to files in
  that directory and a scrape adds up every worker's files (`prometheus_client.multiprocess`).
  The variable must be set before prometheus_client is first imported, i.e. in the environment
  of the gunicorn master, and the directory emptied when the master starts (gunicorn.conf.py).
- **from the database, at scrape time**: outbox rows by state, the age of the oldest pending
  email that is due, delivery attempts by result (all time and last hour), orders by state,
  the scheduler heartbeat's age, whether the schema is at head, the last backup's age. A
  fixed handful of aggregate queries, whatever the size of the tables; the same for every
  worker, so nothing here is per process.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.context import now
from pharmacy.extensions import db
from pharmacy.ops import health
from pharmacy.ops.models import BACKUP, OpsEvent
from pharmacy.reminders.models import DeliveryAttempt, OutboxMessage
from pharmacy.reminders.rules import OutboxState

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Known delivery results, always exported (0 until they happen) so `> 0` and increase() alerts work from day one.
DELIVERY_RESULTS = ("sent", "transient", "permanent", "cancelled", "expired_lease")

REGISTRY = CollectorRegistry(auto_describe=True)
REQUEST_LATENCY = Histogram(
    "pharmacy_http_request_duration_seconds",
    "Time to answer a request, by Flask endpoint name, method and status class.",
    ["endpoint", "method", "status_class"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)


# Decided once, as prometheus_client decides it when first imported (values.ValueClass): a variable set
# later would make a scrape read files no metric of this process writes.
_MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def multiproc_dir() -> str | None:
    return _MULTIPROC_DIR


# ---- request latency -------------------------------------------------------------------------------------


def install_request_hooks(app: Flask) -> None:
    """Time every request, from the first before_request hook to the last after_request hook.

    Inserted at the front of both lists: Flask runs before_request hooks in order (so ours starts
    the clock before the rate limiter or sign-in checks can answer early) and after_request hooks
    in reverse (so ours sees the final status, after the unit of work has committed — or turned
    a failed commit into a 409).
    """

    def _start() -> None:
        g._ops_started = time.perf_counter()

    def _observe(response: Response) -> Response:
        started = g.pop("_ops_started", None)
        if started is not None:
            REQUEST_LATENCY.labels(
                endpoint=request.endpoint or "unmatched",
                method=request.method if request.method in _METHODS else "other",
                status_class=f"{response.status_code // 100}xx",
            ).observe(time.perf_counter() - started)
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request_funcs.setdefault(None, []).insert(0, _observe)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# ---- the pharmacy's work, from the database ----------------------------------------------------------------


class _Families:
    """A collector over metric families already computed (what generate_latest needs)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _age(at: datetime, then: datetime | None) -> float:
    return math.inf if then is None else max((at - then).total_seconds(), 0.0)


@dataclass
class _Readings:
    """What one scrape read from the database, before it is shaped into metric families."""

    at_head: bool
    outbox_rows: list[Any]
    attempt_rows: list[Any]
    order_rows: list[Any]
    heartbeat: datetime | None
    last_backup: datetime | None


def _read(conn: sa.Connection, at: datetime) -> _Readings:
    state = health.migration_state(conn)
    outbox_rows = conn.execute(
        sa.select(
            OutboxMessage.state,
            sa.func.count(),
            sa.func.min(sa.case((OutboxMessage.due_at <= at, OutboxMessage.due_at))),
        ).group_by(OutboxMessage.state)
    ).all()
    attempt_rows = conn.execute(
        sa.select(
            DeliveryAttempt.result,
            sa.func.count(),
            sa.func.sum(sa.case((DeliveryAttempt.at >= at - timedelta(hours=1), 1), else_=0)),
        ).group_by(DeliveryAttempt.result)
    ).all()
    order_rows = conn.execute(sa.select(Order.state, sa.func.count()).group_by(Order.state)).all()
    last_backup = None
    if state.at_head:  # an older schema may not have the operations log yet
        last_backup = conn.execute(
            sa.select(sa.func.max(OpsEvent.at)).where(OpsEvent.kind == BACKUP, OpsEvent.outcome == "ok")
        ).scalar()
    return _Readings(state.at_head, list(outbox_rows), list(attempt_rows), list(order_rows),
                     health.heartbeat_at(conn), last_backup)


def _outbox_families(r: _Readings, at: datetime) -> list[Metric]:
    outbox = GaugeMetricFamily("pharmacy_outbox_messages", "Email outbox rows by state.", labels=["state"])
    counts = {s.value: 0 for s in OutboxState}
    oldest_due: datetime | None = None
    for row_state, count, min_due in r.outbox_rows:
        counts[str(getattr(row_state, "value", row_state))] = count
        if row_state == OutboxState.PENDING:
            oldest_due = min_due
    for name, count in counts.items():
        outbox.add_metric([name], count)
    oldest = GaugeMetricFamily(
        "pharmacy_outbox_oldest_due_pending_age_seconds",
        "How long the oldest pending email has been due (0 when nothing pending is due). "
        "Growing means emails are not going out.",
    )
    oldest.add_metric([], 0.0 if oldest_due is None else _age(at, oldest_due))
    return [outbox, oldest]


def _delivery_families(r: _Readings) -> list[Metric]:
    total = CounterMetricFamily("pharmacy_email_delivery_attempts", "Email delivery attempts by result (all time).",
                                labels=["result"])
    hour = GaugeMetricFamily("pharmacy_email_delivery_attempts_last_hour",
                             "Email delivery attempts by result in the last hour.", labels=["result"])
    by_result = {name: (0, 0) for name in DELIVERY_RESULTS}
    for result, count, recent in r.attempt_rows:
        by_result[str(result)] = (count, int(recent or 0))
    for name, (count, recent) in sorted(by_result.items()):
        total.add_metric([name], count)
        hour.add_metric([name], recent)
    return [total, hour]


def _order_family(r: _Readings) -> Metric:
    orders = GaugeMetricFamily("pharmacy_orders", "Compounding orders by state.", labels=["state"])
    order_counts = {s.value: 0 for s in OrderState}
    for row_state, count in r.order_rows:
        order_counts[str(getattr(row_state, "value", row_state))] = count
    for name, count in order_counts.items():
        orders.add_metric([name], count)
    return orders


def _operations_families(r: _Readings, at: datetime) -> list[Metric]:
    heartbeat = GaugeMetricFamily("pharmacy_scheduler_heartbeat_age_seconds",
                                  "Seconds since the scheduler's last heartbeat (+Inf when it never ran).")
    heartbeat.add_metric([], _age(at, r.heartbeat))
    schema = GaugeMetricFamily("pharmacy_schema_at_head", "1 when the database schema is at this code's migration head.")
    schema.add_metric([], 1 if r.at_head else 0)
    backup = GaugeMetricFamily("pharmacy_last_backup_age_seconds",
                               "Seconds since the last verified `flask backup create` (+Inf when none is recorded).")
    backup.add_metric([], _age(at, r.last_backup))
    return [heartbeat, schema, backup]


def database_families(at: datetime | None = None) -> list[Metric]:
    """Gauges computed now from the database (six aggregate queries; none when it is down)."""
    at = at or now()
    up = GaugeMetricFamily("pharmacy_database_up", "1 when the database answered this scrape's queries.")
    try:
        with db.engine.connect() as conn:
            readings = _read(conn, at)
    except Exception:
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [up, *_outbox_families(readings, at), *_delivery_families(readings), _order_family(readings),
            *_operations_families(readings, at)]


def process_families() -> list[Metric]:
    """The request histogram: this process's, or every gunicorn worker's added up in multiprocess mode."""
    directory = multiproc_dir()
    if directory:

        return list(MultiProcessCollector(None, path=directory).collect())
    return list(REGISTRY.collect())


def render() -> tuple[bytes, str]:
    families = process_families() + database_families()
    return generate_latest(_Families(families)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
