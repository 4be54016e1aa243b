"""Faxes and scans: the type read from the content, the size limit, one document per checksum, pages drawn as PNG,
the watched folder imported file by file (claimed, imported or refused with a reason), attached once accepted."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from pharmacy.core.actor import SYSTEM
from pharmacy.core.errors import ValidationFailed
from pharmacy.documents import pages, rules
from pharmacy.documents import services as documents
from pharmacy.documents.cli import import_folder
from pharmacy.documents.models import Document
from pharmacy.documents.rules import DocumentSource, DocumentType
from pharmacy.eprescribing.models import ErxIntake
from pharmacy.eprescribing.rules import IntakeState, Source
from pharmacy.extensions import db
from pharmacy.workflows import eprescribing as workflow
from tests import factories
from tests.documents_support import fax_tiff, prescription_pdf, scan_png


@pytest.mark.parametrize(("data", "kind"), [
    (b"%PDF-1.7\n...", DocumentType.PDF), (b"\n\n junk %PDF-1.4", DocumentType.PDF), (b"II*\x00rest", DocumentType.TIFF),
    (b"MM\x00*rest", DocumentType.TIFF), (b"\x89PNG\r\n\x1a\nrest", DocumentType.PNG),
    (b"\xff\xd8\xff\xe0rest", DocumentType.JPEG), (b"GIF89a", None), (b"<html>", None), (b"PK\x03\x04", None),
])
def test_the_type_comes_from_the_content(data: bytes, kind: DocumentType | None) -> None:
    assert rules.sniff(data) == kind


def test_refusals_say_why() -> None:
    with pytest.raises(ValidationFailed, match="empty"):
        rules.check(b"", max_bytes=10)
    with pytest.raises(ValidationFailed, match="too large"):
        rules.check(b"%PDF-" + b"x" * 20, max_bytes=10)
    with pytest.raises(ValidationFailed, match="not a PDF, TIFF, PNG or JPEG"):
        rules.check(b"MZ\x90\x00 an executable named fax.pdf", max_bytes=1000)
    assert rules.safe_name("../../etc/passwd") == "passwd" and rules.safe_name('a<b>"c.pdf') == "abc.pdf"


def test_pages_are_counted_and_drawn() -> None:
    pdf = prescription_pdf(pages=2)
    assert pages.count_pages(pdf, DocumentType.PDF) == 2
    png = pages.render_page(pdf, DocumentType.PDF, 1)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width == pages.PAGE_WIDTH
    tiff = fax_tiff(3)
    assert pages.count_pages(tiff, DocumentType.TIFF) == 3
    assert Image.open(io.BytesIO(pages.render_page(tiff, DocumentType.TIFF, 2))).format == "PNG"
    assert pages.count_pages(scan_png(), DocumentType.PNG) == 1


@pytest.mark.parametrize(("data", "kind"), [(b"%PDF-1.4 this is not really a pdf", DocumentType.PDF),
                                            (b"II*\x00 broken", DocumentType.TIFF),
                                            (b"\x89PNG\r\n\x1a\n broken", DocumentType.PNG)])
def test_a_file_that_only_starts_right_is_refused(data: bytes, kind: DocumentType) -> None:
    with pytest.raises(ValidationFailed, match="could not be read"):
        pages.count_pages(data, kind)


def test_a_decompression_bomb_is_refused() -> None:
    out = io.BytesIO()
    Image.new("1", (9000, 9000), 1).save(out, format="PNG")  # small file, 81 million pixels
    with pytest.raises(ValidationFailed, match="too large"):
        pages.count_pages(out.getvalue(), DocumentType.PNG)


def test_the_same_fax_twice_is_one_document_and_one_queue_entry(app_ctx, staff) -> None:
    tech = factories.actor(staff["technician"])
    pdf = prescription_pdf()
    doc, intake, new = workflow.receive_document(tech, name="fax-0001.pdf", data=pdf, source=DocumentSource.UPLOAD)
    again, same, new_again = workflow.receive_document(tech, name="copy.pdf", data=pdf, source=DocumentSource.UPLOAD)
    assert new and not new_again and again.id == doc.id and same.id == intake.id
    assert doc.sha256 == rules.checksum(pdf) and doc.page_count == 1 and doc.content_type == DocumentType.PDF
    assert intake.source == Source.FAX and intake.state == IntakeState.WAITING and intake.document_id == doc.id


def test_seeing_a_page_is_audited_and_admins_cannot(app_ctx, staff) -> None:
    from pharmacy.core.errors import Forbidden
    from pharmacy.core.models import AuditEvent

    tech = factories.actor(staff["technician"])
    doc, _intake, _new = workflow.receive_document(tech, name="f.tif", data=fax_tiff(), source=DocumentSource.UPLOAD)
    png = documents.page_image(tech, doc.id, 2)
    assert png.startswith(b"\x89PNG")
    with pytest.raises(Forbidden):
        documents.page_image(factories.actor(staff["admin"]), doc.id, 1)
    actions = db.session.execute(sa.select(AuditEvent.action).where(AuditEvent.entity_type == "document")).scalars()
    assert "document.page_view" in set(actions)


def _drop(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def test_the_watched_folder_imports_each_file_once(app, tmp_path: Path) -> None:
    inbox = tmp_path / "fax-inbox"
    inbox.mkdir()
    pdf = prescription_pdf(marker="one")
    _drop(inbox, "fax-1.pdf", pdf)
    _drop(inbox, "fax-2.tif", fax_tiff())
    _drop(inbox, "fax-3.pdf", pdf)  # the fax server sent it twice
    _drop(inbox, "notes.txt", b"call Dr Okafor back")
    _drop(inbox, "fax-4.pdf.part", b"%PDF- still being written")
    _drop(inbox, ".hidden.pdf", b"%PDF-")
    with app.app_context():
        report = import_folder(inbox)
        assert (report.imported, report.duplicates, report.refused) == (2, 1, 1)
        assert db.session.execute(sa.select(sa.func.count()).select_from(Document)).scalar_one() == 2
        assert db.session.execute(sa.select(sa.func.count()).select_from(ErxIntake)).scalar_one() == 2
        sources = set(db.session.execute(sa.select(Document.source)).scalars())
        assert sources == {DocumentSource.FOLDER}
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [".hidden.pdf", "fax-4.pdf.part"]
    assert len(list((inbox / "imported").iterdir())) == 3
    refused = sorted(p.name for p in (inbox / "refused").iterdir())
    assert len(refused) == 2 and refused[1].endswith(".reason.txt")
    assert "not a PDF, TIFF, PNG or JPEG" in (inbox / "refused" / refused[1]).read_text()
    with app.app_context():
        assert import_folder(inbox).line() == "imported 0, already on file 0, refused 0"


def test_the_folder_command(app, tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    _drop(inbox, "scan.png", scan_png())
    result = app.test_cli_runner().invoke(args=["documents", "import-folder", "--dir", str(inbox)])
    assert result.exit_code == 0 and "imported 1" in result.output
    result = app.test_cli_runner().invoke(args=["documents", "import-folder"])
    assert result.exit_code != 0 and "DOCUMENT_INBOX_DIR" in result.output


def test_an_accepted_fax_is_attached_to_its_prescription(app_ctx, staff) -> None:
    w = factories.world(staff)
    doc, intake, _new = workflow.receive_document(w["technician"], name="fax.pdf", data=prescription_pdf(),
                                                  source=DocumentSource.UPLOAD)
    from pharmacy.eprescribing import services

    services.choose_patient(w["technician"], intake.id, w["patient"].id)
    data: dict[str, Any] = {
        "patient_id": w["patient"].id, "prescriber_id": w["prescriber"].id, "formula_id": w["formula"].id,
        "dose_mg": w["rx"].dose_mg, "dosing_time": w["rx"].dosing_time, "days_supply": 30, "refills_authorized": 5,
        "written_date": w["rx"].written_date, "titration": [],
    }
    rx = workflow.accept(w["pharmacist"], intake.id, data)
    assert db.session.get(Document, doc.id).prescription_id == rx.id
    assert [d.id for d in documents.documents_of(rx.id)] == [doc.id]
    assert db.session.get(ErxIntake, intake.id).state == IntakeState.ACCEPTED
    assert SYSTEM.kind == "system"
