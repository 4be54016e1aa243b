"""The demo seeds in a test's database, loaded through the real loader once per run and copied after that.

Loading `seeds/` goes through every service (patients, prescriptions with screening, fills with lots, payments,
reminders): about two seconds, paid by each of the ~25 page and browser tests that read a realistic pharmacy. The
first such test loads them for real and keeps the rows the load wrote; later tests whose database starts the same
(the same rows before the load, the same clock, the same secret key: see `_key`) get those rows inserted as they
were, ids included, in one statement per table. The loader's own behaviour is tested by tests that call it
directly (tests/web/test_production_pages.py, tests/integration/test_prescription_services.py).
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app

from pharmacy.core.context import now
from pharmacy.extensions import db
from pharmacy.paths import ROOT

Rows = dict[str, list[dict[str, Any]]]
_copies: dict[tuple[Any, ...], Rows] = {}


def load_demo_seeds() -> None:
    """The demo seeds' rows in the current app's database (inside an app context; committed)."""
    from pharmacy.seeding.loader import load

    conn = db.session.connection()
    before = _read(conn)
    key = _key(conn, before)
    copy = _copies.get(key)
    if copy is not None:
        _insert(conn, copy)
        db.session.commit()
        return
    load(ROOT / "seeds")
    db.session.commit()
    after = _read(db.session.connection())
    _copies[key] = _added(before, after)


def _key(conn: sa.Connection, before: Rows) -> tuple[Any, ...]:
    present = tuple((name, tuple(sorted(_pk(name, row) for row in rows))) for name, rows in sorted(before.items()))
    return conn.dialect.name, now(), current_app.config["SECRET_KEY"], present


def _pk(table_name: str, row: dict[str, Any]) -> tuple[Any, ...]:
    table = db.metadata.tables[table_name]
    return tuple(row[c.name] for c in table.primary_key.columns)


def _read(conn: sa.Connection) -> Rows:
    return {t.name: [dict(r) for r in conn.execute(sa.select(t)).mappings()] for t in db.metadata.sorted_tables}


def _added(before: Rows, after: Rows) -> Rows:
    """The rows the load wrote. It must not have changed a row that was there: a copy could not repeat that."""
    added: Rows = {}
    for name, rows in after.items():
        old = {_pk(name, row): row for row in before[name]}
        for row in rows:
            previous = old.get(_pk(name, row))
            if previous is not None and previous != row:
                raise AssertionError(f"the demo seeds changed a row already in {name}: a copy would not repeat it")
        added[name] = [row for row in rows if _pk(name, row) not in old]
    return added


def _insert(conn: sa.Connection, rows: Rows) -> None:
    postgres = conn.dialect.name == "postgresql"
    if postgres:  # the copy is consistent as a whole; row by row, triggers and key checks have nothing to add
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
    for table in db.metadata.sorted_tables:
        if rows.get(table.name):
            conn.execute(table.insert(), rows[table.name])
    if postgres:
        conn.execute(sa.text("SET LOCAL session_replication_role = origin"))
        for table in db.metadata.sorted_tables:
            ids = [c for c in table.primary_key.columns if c.autoincrement is True or
                   (c.autoincrement == "auto" and isinstance(c.type, sa.Integer) and len(table.primary_key.columns) == 1)]
            if ids and rows.get(table.name):
                column = ids[0].name
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), "
                                     f"(SELECT max({column}) FROM {table.name}))"))
