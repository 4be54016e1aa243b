"""Faxed and scanned prescriptions: the upload page, each page as an image, the original file."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, flash, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.exceptions import RequestEntityTooLarge
from wtforms import ValidationError as CSRFValidationError

from pharmacy.core import sessions, uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.errors import ValidationFailed
from pharmacy.documents import services
from pharmacy.documents.rules import DocumentSource
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import csrf
from pharmacy.workflows import eprescribing as workflow

bp = Blueprint("documents", __name__, url_prefix="/documents")


def init_app(app: Flask) -> None:
    # The prescription page lists the faxes a prescription was typed in from (one short query, metadata only).
    app.add_template_global(services.documents_of, "attached_documents")

ID = "int(max=2147483647)"
FORM_OVERHEAD = 64 * 1024  # the multipart envelope and the CSRF field around the file


@bp.get("/upload")
@staff_required
def upload_form() -> Any:
    services.require_intake(current_actor())
    return render_template("documents/upload.html", errors={}, max_mb=erx_settings().document_max_bytes // 2**20)


@bp.post("/upload")
@csrf.exempt  # checked below, once the larger size limit of this form is in force
@staff_required
def upload() -> Any:
    actor = current_actor()
    services.require_intake(actor)
    limit = erx_settings().document_max_bytes
    request.max_content_length = limit + FORM_OVERHEAD
    max_mb = limit // 2**20
    try:
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            validate_csrf(request.form.get("csrf_token"))
        file = request.files.get("file")
    except RequestEntityTooLarge:
        return render_template("documents/upload.html", max_mb=max_mb,
                               errors={"file": [f"At most {max_mb} MB."]}), 413
    except CSRFValidationError as exc:
        raise CSRFError(str(exc)) from None
    if file is None or not file.filename:
        return render_template("documents/upload.html", max_mb=max_mb,
                               errors={"file": ["Choose a PDF, TIFF, PNG or JPEG file."]}), 422
    data = file.read(limit + 1)
    try:
        _doc, intake, _new = workflow.receive_document(actor, name=file.filename, data=data, source=DocumentSource.UPLOAD)
    except ValidationFailed as exc:
        uow.discard()
        return render_template("documents/upload.html", max_mb=max_mb, message=exc.message,
                               errors=exc.fields or {"file": [exc.message]}), 422
    flash("The document is in the intake queue: type the prescription in beside it.", "success")
    return redirect(url_for("eprescribing.review", intake_id=intake.id))


@bp.get(f"/<{ID}:doc_id>/pages/<{ID}:page>.png")
@staff_required
def page(doc_id: int, page: int) -> Any:
    sessions.leave_cookie()  # fetched beside the review form, while it may be submitted
    png = services.page_image(current_actor(), doc_id, page)
    return Response(png, mimetype="image/png")


@bp.get(f"/<{ID}:doc_id>/original")
@staff_required
def original(doc_id: int) -> Any:
    doc = services.original(current_actor(), doc_id)
    extension = {"application/pdf": "pdf", "image/tiff": "tif", "image/png": "png", "image/jpeg": "jpg"}
    return Response(doc.data, mimetype=doc.content_type.value, headers={
        "Content-Disposition": f'attachment; filename="document-{doc.id}.{extension[doc.content_type.value]}"'})
