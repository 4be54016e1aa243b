"""Writing the generated rows: a buffer per table, written in batches — executemany of a Core INSERT on SQLite,
COPY on PostgreSQL — so memory stays flat however many patients are generated; and the run's report."""
from __future__ import annotations

import resource
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa


class Sink:
    """Rows for one table, as tuples in `cols` order, flushed in batches."""

    def __init__(self, table: sa.Table, cols: Iterable[str]) -> None:
        self.table = table
        names = list(table.c.keys())
        wanted = set(cols)
        unknown = sorted(wanted - set(names))
        if unknown:
            raise ValueError(f"{table.name}: no column(s) {unknown}")
        self.cols = tuple(c for c in names if c in wanted)  # the table's own order, as a compiled INSERT lists them
        self.rows: list[tuple[Any, ...]] = []
        self.written = 0

    def add(self, **values: Any) -> None:
        self.rows.append(tuple(map(values.get, self.cols)))


class Writer:
    """Writes sinks in foreign-key order; knows how this database wants dates, instants and flags."""

    def __init__(self, conn: sa.Connection, batch_size: int) -> None:
        self.conn = conn
        self.batch_size = batch_size
        self.pg = conn.dialect.name == "postgresql"
        self.sinks: list[Sink] = []
        self._sql: dict[str, str] = {}

    def sink(self, table: sa.Table, cols: Iterable[str]) -> Sink:
        s = Sink(table, cols)
        self.sinks.append(s)
        return s

    def maybe_flush(self) -> None:
        if any(len(s.rows) >= self.batch_size for s in self.sinks):
            self.flush()

    def flush(self) -> None:
        for s in self.sinks:  # parents before children: the order the sinks were made in
            if s.rows:
                self._write(s)
                s.written += len(s.rows)
                s.rows = []

    def _write(self, s: Sink) -> None:
        if self.pg:
            raw = self.conn.connection.driver_connection
            cols = ", ".join(f'"{c}"' for c in s.cols)
            with raw.cursor() as cur, cur.copy(f'COPY "{s.table.name}" ({cols}) FROM STDIN') as copy:
                for row in s.rows:
                    copy.write_row(row)
            return
        sql = self._sql.get(s.table.name)
        if sql is None:
            # The INSERT is built by SQLAlchemy Core (quoting, paramstyle), then run with executemany.
            stmt = sa.insert(s.table).values({c: sa.bindparam(c) for c in s.cols})
            compiled = stmt.compile(dialect=self.conn.dialect)
            sql = self._sql[s.table.name] = str(compiled)
            order = compiled.positiontup or []
            if list(order) != list(s.cols):
                raise RuntimeError(f"{s.table.name}: unexpected parameter order {order}")
        self.conn.exec_driver_sql(sql, s.rows)


# ---- the generator --------------------------------------------------------------------------------------


@dataclass
class GenReport:
    patients: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    today: date | None = None
    lot_numbers_over_999_a_day: int = 0
    totals_rows: dict[str, int] = field(default_factory=dict)  # the running totals rebuilt at the end
    totals_seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "rows": self.rows, "total_rows": self.total_rows,
                "seconds": round(self.seconds, 2), "rows_per_second": round(self.rows_per_second),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "today": self.today.isoformat() if self.today else None,
                "lot_numbers_over_999_a_day": self.lot_numbers_over_999_a_day, "totals_rows": self.totals_rows,
                "totals_seconds": self.totals_seconds}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


