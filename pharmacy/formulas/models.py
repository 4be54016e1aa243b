"""Versions of a master formulation record: each change is a new version that a pharmacist approves before use."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.extensions import db
from pharmacy.formulas.rules import VersionStatus


class FormulaVersion(db.Model):
    """A version of a formula as written (a snapshot of the record and its ingredients), pending until approved."""

    __tablename__ = "formula_versions"
    __table_args__ = (
        sa.UniqueConstraint("formula_id", "version"),
        # At most one change waiting for approval per formula, kept by the database.
        sa.Index("uq_formula_versions_one_pending", "formula_id", unique=True,
                 sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    formula_id: Mapped[int] = mapped_column(sa.ForeignKey("formulas.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column()
    status: Mapped[VersionStatus] = mapped_column(enum_column(VersionStatus, name="formulaversionstatus"))
    snapshot: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    change_note: Mapped[str] = mapped_column(sa.String(400))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_note: Mapped[str | None] = mapped_column(sa.String(400))
