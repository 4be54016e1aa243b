"""Faxes and scans: receive (upload or the watched folder), show page by page, attach to the prescription."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer

from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.errors import NotFound
from pharmacy.core.roles import Permission
from pharmacy.documents import pages, rules
from pharmacy.documents.models import Document
from pharmacy.documents.rules import DocumentSource
from pharmacy.eprescribing.models import ErxIntake
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription

MAX_ID = 2**31 - 1


def store_document(actor: Actor, *, name: str | None, data: bytes, source: DocumentSource) -> tuple[Document, bool]:
    """Keep a faxed or scanned prescription: (the document, whether it is new).

    The type is sniffed from the content and the file opened to count its pages, so a file that is not what it
    claims never reaches the queue. The same file twice (same SHA-256) is the same document: the fax server
    re-sending it, or a double upload, adds nothing. The folder import acts as the system.
    """
    if actor.kind != "system":
        audit.require(actor, Permission.ENTER_PRESCRIPTION, what="add faxed prescriptions")
    kind = rules.check(data, max_bytes=erx_settings().document_max_bytes)
    digest = rules.checksum(data)
    existing = db.session.execute(sa.select(Document).where(Document.sha256 == digest)).scalar_one_or_none()
    if existing is not None:
        audit.record(actor, "document.duplicate", entity=("document", existing.id))
        return existing, False
    page_count = pages.count_pages(data, kind)
    doc = Document(source=source, original_name=rules.safe_name(name), content_type=kind, size_bytes=len(data),
                   sha256=digest, page_count=page_count, data=data, received_at=now(), uploaded_by_id=actor.user_id)
    try:
        with db.session.begin_nested():
            db.session.add(doc)
            db.session.flush()
    except IntegrityError:  # the same file stored at the same moment by another worker
        found = db.session.execute(sa.select(Document).where(Document.sha256 == digest)).scalar_one()
        return found, False
    audit.record(actor, "document.receive", entity=("document", doc.id),
                 details={"type": kind.value, "pages": page_count, "source": source.value})
    return doc, True


def _document(doc_id: int) -> Document:
    if isinstance(doc_id, bool) or not isinstance(doc_id, int) or not 1 <= doc_id <= MAX_ID:
        raise NotFound("No such document.")
    doc = db.session.get(Document, doc_id)
    if doc is None:
        raise NotFound("No such document.")
    return doc


def require_intake(actor: Actor) -> None:
    """Checked before the upload is even read: only staff who may enter prescriptions add faxes."""
    audit.require(actor, Permission.ENTER_PRESCRIPTION, what="add faxed prescriptions")


def patient_of(doc: Document) -> int | None:
    """Whose prescription the document is, as far as the pharmacy knows yet: the prescription it became, or the
    patient chosen on its queue entry (read from the database, never from the request)."""

    if doc.prescription_id is not None:
        return db.session.execute(sa.select(Prescription.patient_id).where(Prescription.id == doc.prescription_id)
                                  ).scalar_one_or_none()
    return db.session.execute(sa.select(ErxIntake.patient_id).where(ErxIntake.document_id == doc.id)
                              .order_by(ErxIntake.id)).scalars().first()


def page_image(actor: Actor, doc_id: int, page_number: int) -> bytes:
    """Page `page_number` (1-based) as a PNG. Seeing a prescription is seeing patient data: audited, page by page."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see faxed prescriptions")
    doc = _document(doc_id)
    if not 1 <= page_number <= doc.page_count:
        raise NotFound("No such page.")
    audit.record(actor, "document.page_view", patient_id=patient_of(doc), entity=("document", doc.id),
                 details={"page": page_number})
    return pages.render_page(doc.data, doc.content_type, page_number - 1)


def original(actor: Actor, doc_id: int) -> Document:
    """The file as received, for download (audited)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see faxed prescriptions")
    doc = _document(doc_id)
    audit.record(actor, "document.download", patient_id=patient_of(doc), entity=("document", doc.id))
    return doc


def attach(actor: Actor, doc_id: int, prescription_id: int, *, patient_id: int | None = None) -> Document:
    """The document became (or belongs to) this prescription: kept with it for good."""
    doc = _document(doc_id)
    doc.prescription_id = prescription_id
    doc.attached_at = now()
    db.session.flush()
    audit.record(actor, "document.attach", patient_id=patient_id, entity=("document", doc.id),
                 details={"prescription": prescription_id})
    return doc


def documents_of(prescription_id: int) -> list[Document]:
    """The documents attached to a prescription (metadata; the bytes are not loaded)."""
    return list(db.session.execute(
        sa.select(Document).where(Document.prescription_id == prescription_id)
        .options(defer(Document.data)).order_by(Document.id)
    ).scalars())
