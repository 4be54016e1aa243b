"""Declarative base, naming convention and the column types every feature shares.

Exact quantities (doses in mg, volumes in mL, capsule counts) are stored as integers in
thousandths so they stay exact on SQLite and PostgreSQL alike; Python sees `Decimal`.
Instants are stored in UTC and always come back timezone-aware.
"""
from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive values are refused, never guessed."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        """One cheap call per value, not TypeDecorator's chain of three: a list page reads thousands of instants.

        Why not `value.replace(tzinfo=UTC)`: on Python 3.11 that call alone costs ~2 µs, five times parsing the text.
        SQLite hands back text in the dialect's storage format (naive UTC, as bound above): parsed with the zone
        appended, in one C call. PostgreSQL's driver hands back datetimes, naive for these `timestamp without time
        zone` columns: rebuilt with the zone. A value that already has a zone (a raw `timestamptz` expression) is
        only moved to UTC."""
        parse = self.impl_instance.result_processor(dialect, coltype)
        if parse is not None:
            def from_text(value: Any) -> datetime | None:
                if value is None:
                    return None
                if isinstance(value, str):
                    try:
                        return datetime.fromisoformat(value + "+00:00")
                    except ValueError:  # not the storage format (text with its own offset): the dialect's parser
                        pass
                return _utc(parse(value))

            return from_text
        return _utc


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                        value.microsecond, UTC)
    return value.astimezone(UTC)


THOUSAND = Decimal(1000)


class Milli(TypeDecorator[Decimal]):
    """A Decimal with three places stored as an integer count of thousandths."""

    impl = sa.Integer
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Any) -> int | None:
        if value is None:
            return None
        d = Decimal(str(value)) * THOUSAND
        return int(d.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value) / THOUSAND


def enum_column(enum_cls: type[enum.Enum], name: str | None = None) -> sa.Enum:
    """Store an enum's *values* as a short string with a CHECK constraint (portable, readable)."""
    return sa.Enum(
        enum_cls,
        name=name or enum_cls.__name__.lower(),
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


def first_ids(id_col: Any, where: Any, order: tuple[Any, ...], limit: int) -> Any:
    """The ids of the first `limit` rows matching `where` in `order`, as a subquery (column `id`) to join the full
    rows to.

    Why: "the oldest five waiting requests" over a (state, time) index is an index-only read when it selects ids;
    selecting the whole rows — or their joined prescription and patient — makes the database fetch and sort every
    waiting row to keep five, tens of milliseconds at chain scale. Join this, then order the few rows again."""
    return sa.select(id_col.label("id")).where(where).order_by(*order).limit(limit).subquery()


def first_ids_of_each(id_col: Any, state_col: Any, states: Any, order: tuple[Any, ...], limit: Any,
                      offset: Any = 0) -> Any:
    """first_ids for rows in any of several `states`, along an index on (state, *order): the first `limit` of each
    state read as its own ordered range, then the first `limit` of those — a few index entries per state.

    Why: `state IN (…) ORDER BY time LIMIT n` cannot be read in order from a (state, time) index, so the database
    reads every row of those states and sorts them (PostgreSQL took 4–9 ms a list at chain scale, fetching each
    row to sort it). Each member is wrapped in its own subquery: SQLite allows no ORDER BY/LIMIT on a member of a
    UNION. `offset` pages on: each state's first offset + limit, then that page of the merged list."""
    keys = [o.label(f"k{i}") for i, o in enumerate(order)]
    paged = not (isinstance(offset, int) and offset == 0)  # a bound offset (a statement built once) pages too
    parts = []
    for state in states:
        first = (sa.select(id_col.label("id"), *keys).where(state_col == state).order_by(*order)
                 .limit(offset + limit if paged else limit).subquery())
        parts.append(sa.select(first.c.id, *(first.c[f"k{i}"] for i in range(len(order)))))
    merged = sa.union_all(*parts).subquery()
    listed = sa.select(merged.c.id).order_by(*(merged.c[f"k{i}"] for i in range(len(order)))).limit(limit)
    return (listed.offset(offset) if paged else listed).subquery()


IN_CHUNK = 5000  # ids per IN (…) list: SQLite allows 32,766 parameters a statement


def chunks(ids: list[int], size: int = IN_CHUNK) -> Iterator[list[int]]:
    """Ids in slices small enough for one IN (…) list on every database."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def upsert_insert(table: sa.Table, dialect_name: str) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING … RETURNING, on PostgreSQL and on SQLite alike."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
