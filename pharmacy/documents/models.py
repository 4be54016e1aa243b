"""A faxed or scanned prescription, kept whole with its checksum."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from pharmacy.core.db import UTCDateTime, enum_column
from pharmacy.documents.rules import DocumentSource, DocumentType
from pharmacy.extensions import db


class Document(db.Model):
    """The file as received (never altered), its SHA-256 (the same fax twice is one document), its sniffed type,
    and — once a pharmacist has turned it into one — the prescription it became."""

    __tablename__ = "documents"
    __table_args__ = (
        sa.CheckConstraint("size_bytes > 0", name="size_positive"),
        sa.CheckConstraint("page_count > 0", name="pages_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[DocumentSource] = mapped_column(enum_column(DocumentSource))
    original_name: Mapped[str] = mapped_column(sa.String(120))
    content_type: Mapped[DocumentType] = mapped_column(enum_column(DocumentType))
    size_bytes: Mapped[int] = mapped_column()
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    page_count: Mapped[int] = mapped_column()
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    uploaded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    prescription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prescriptions.id"), index=True)
    attached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
