"""POST /ncpdp/script: where the e-prescribing intermediary delivers SCRIPT messages.

Authenticated with a bearer API token of scope "ncpdp" (flask users token --scope ncpdp), which works nowhere
else; no cookies, so no CSRF. The body is application/xml. Every message that arrives is answered in SCRIPT:
Status when it was taken in, Error (with the reason) when it was not — with HTTP 200, as the protocol carries its
own outcome. HTTP-level problems (no or wrong token, wrong content type, too large) get their HTTP status with an
Error body too, so the sender always has something to read.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import RequestEntityTooLarge

from pharmacy.core import audit
from pharmacy.core.actor import ANONYMOUS
from pharmacy.core.auth import actor_from_bearer
from pharmacy.core.uow import mark_rollback
from pharmacy.eprescribing import messages, ncpdp
from pharmacy.extensions import db
from pharmacy.workflows import eprescribing as workflow

log = logging.getLogger(__name__)

bp = Blueprint("ncpdp", __name__, url_prefix="/ncpdp")

XML = "application/xml"
ACCEPTED_TYPES = ("application/xml", "text/xml")


def _error(status: int, description: str, code: str = ncpdp.ERROR_REJECTED) -> Response:
    body = ncpdp.answer_message("Error", messages.answer_header(None), ncpdp.Answer(code=code, description=description))
    response = Response(body, status=status, mimetype=XML)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ncpdp"'
    return response


@bp.post("/script")
def script() -> Any:
    request.max_content_length = ncpdp.MAX_MESSAGE_BYTES
    actor = actor_from_bearer(("ncpdp",))
    if actor is None:
        audit.record(ANONYMOUS, "denied.ncpdp_token", outcome="denied", details={"endpoint": request.endpoint},
                     survive_rollback=True)
        return _error(401, "A valid NCPDP token is required (Authorization: Bearer <token>).")
    if (request.mimetype or "") not in ACCEPTED_TYPES:
        mark_rollback()
        return _error(415, "Send the SCRIPT message as application/xml.")
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        mark_rollback()
        return _error(413, f"The message is larger than {ncpdp.MAX_MESSAGE_BYTES // 1024} KiB.")
    try:
        reply = workflow.receive_script(actor, raw)
    except DataError as exc:  # a value the database cannot hold that the parser's limits missed: still an answer
        db.session.rollback()
        log.warning("SCRIPT message refused by the database (%s)", type(exc.orig).__name__)
        mark_rollback()
        return _error(200, "A value in the message is out of the range this pharmacy accepts.", ncpdp.ERROR_UNABLE)
    return Response(reply.body, status=200, mimetype=XML)
