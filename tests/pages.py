"""What tests of pages share: reading a page as a person does, and doing work in the app outside a request.

One copy of each helper (the statement counter is tests/conftest.counted_statements).
"""
from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from pypdf import PdfReader

from pharmacy.core.models import AuditEvent
from pharmacy.extensions import db
from tests import factories
from tests.conftest import counted_statements


def build(app: Flask, staff: dict, **kw: Any) -> dict[str, Any]:
    """factories.world, committed; returns ids (rows are used outside this context)."""
    with app.test_request_context("/"):
        w = factories.world(staff, **kw)
        db.session.commit()
        return {"patient": w["patient"].id, "rx": w["rx"].id, "formula": w["formula"].id,
                "prescriber": w["prescriber"].id}


def run(app: Flask, fn: Any) -> Any:
    """Run `fn` inside a request context of the app and commit what it did."""
    with app.test_request_context("/"):
        result = fn()
        db.session.commit()
        return result


def count(app: Flask, model: type, *where: Any) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar_one()


def audit_actions(app: Flask, **where: Any) -> list[str]:
    with app.app_context():
        stmt = sa.select(AuditEvent.action).order_by(AuditEvent.id)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, name) == value)
        return list(db.session.execute(stmt).scalars())


def words(body: str) -> str:
    """Markup as the words a person reads (tags dropped, entities decoded, spaces collapsed)."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def text(response: Any) -> str:
    """The page's main content as plain text (the whole page when it has no <main>)."""
    body = response.get_data(as_text=True)
    main = body.split('<main id="main">', 1)[-1].split("</main>", 1)[0]
    return words(main)


def page_text(response: Any) -> str:
    """The whole page as plain text (navigation and footer included)."""
    return words(response.get_data(as_text=True))


def field_error(body: str, name: str) -> str:
    """The message shown under a field (its .error paragraph)."""
    match = re.search(rf'id="{re.escape(name.replace(".", "-"))}-error">([^<]+)<', body)
    assert match, f"no message under {name}"
    return html.unescape(match.group(1))


@contextmanager
def queries(app: Flask) -> Iterator[list[str]]:
    """The statements the app's engine runs while the block runs."""
    with app.app_context():
        engine = db.engine
    with counted_statements(engine) as seen:
        yield seen


def labels_cover_inputs(body: str) -> None:
    """Every visible input, select and textarea has a <label for=…> (keyboard and screen-reader users)."""
    ids = re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|submit)")[^>]*\sid="([^"]+)"', body)
    fors = set(re.findall(r'<label[^>]*\sfor="([^"]+)"', body))
    missing = [i for i in ids if i not in fors]
    assert ids and not missing, f"inputs without a label: {missing}"
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]+">', body)


def pdf_text(data: bytes) -> str:
    """The PDF's text; the no-break spaces that keep numbers with their units read as spaces."""
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages).replace("\u00a0", " ")


def confirm_birth_date(client: Any, token: str, dob: Any) -> Any:
    """A patient confirms their date of birth on a refill link, as the page's form sends it."""
    return client.post(f"/r/{token}", data={"month": str(dob.month), "day": str(dob.day), "year": str(dob.year)})
