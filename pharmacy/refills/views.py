"""Refill pages: the patient's signed-link pages (/r/…) and the pharmacy's request queue and renewals.

The patient pages show nothing before the date of birth is confirmed. A confirmation is remembered
in the (signed) session cookie for one link nonce and CONFIRMED_MINUTES only — never the patient's
identity — so a shared or borrowed phone does not stay open on someone's prescription.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.routing import BuildError

from pharmacy.billing.rules import format_cents
from pharmacy.core import links
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.clock import local_date
from pharmacy.core.context import now, settings, today
from pharmacy.core.errors import LinkInvalid, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.core.views import url_for_each
from pharmacy.extensions import limiter
from pharmacy.refills import queue as refill_queue
from pharmacy.refills import renewals, rules, services
from pharmacy.refills.rules import RequestSource
from pharmacy.refills.schemas import (
    BirthDateFormSchema,
    DeclineSchema,
    LinkRequestFormSchema,
    StaffRequestFormSchema,
)
from pharmacy.workflows import refill_requests as refill_flow
from pharmacy.workflows import renewals as renewal_flow

bp = Blueprint("refills", __name__)

SESSION_KEY = "link_ok"  # {nonce: unix time the confirmation ends}
CONFIRMED_MINUTES = 15
MAX_REMEMBERED_LINKS = 5
LINK_STATUS = services.LINK_HTTP_STATUS
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# ---- presentation helpers (wording only; every rule lives in services/rules) ---------------------


def day_words(d: date | None) -> str:
    """"Wednesday, November 25, 2026": the weekday helps a patient place the date."""
    if d is None:
        return ""
    return f"{_WEEKDAYS[d.weekday()]}, {rules.long_date(d)}"


def _optional_url(endpoint: str, key: str) -> Callable[[int], str] | None:
    """Links to another feature's page, by id, only if that page exists (features land independently)."""
    if endpoint not in current_app.view_functions:
        return None
    try:
        return url_for_each(endpoint, key)
    except BuildError:
        return None


def _url_by_rule(prefix: str, suffix: str) -> Callable[[int], str] | None:
    """Links to the GET page whose rule is `prefix<int:…>suffix` (e.g. /prescriptions/<id>/replace), whatever its
    endpoint."""
    for rule in current_app.url_map.iter_rules():
        text = rule.rule
        if text.startswith(prefix + "<") and text.endswith(">" + suffix) and "GET" in (rule.methods or ()) \
                and len(rule.arguments) == 1:
            try:
                return url_for_each(rule.endpoint, next(iter(rule.arguments)))
            except BuildError:
                return None
    return None


class _Links:
    """A page's links of one kind, `links(id)` → the URL or None: the page is looked for once, on the first call,
    and each link is then a string join (a queue of 50 requests and 50 renewals has some 250 links; finding the
    rule and building each with url_for was a tenth of the page)."""

    def __init__(self, find: Callable[[], Callable[[int], str] | None]) -> None:
        self._find = find
        self._build: Callable[[int], str] | None = None
        self._found = False

    def __call__(self, value: int) -> str | None:
        if not self._found:
            self._build, self._found = self._find(), True
        return self._build(value) if self._build is not None else None


def _page_helpers() -> dict[str, Callable[..., Any]]:
    return {
        "money": format_cents,
        "day": day_words,
        "local_day": lambda at: day_words(local_date(at, settings().timezone)) if at else "",
        "order_url": _Links(lambda: _optional_url("compounding.order", "order_id")),
        "patient_url": _Links(lambda: _optional_url("patients.detail", "patient_id")),
        "rx_url": _Links(lambda: _url_by_rule("/prescriptions/", "")),
        "replace_url": _Links(lambda: _url_by_rule("/prescriptions/", "/replace")),
    }


def _render(template: str, status: int = 200, **context: Any) -> Any:
    return render_template(template, **_page_helpers(), **context), status


# ---- the patient's pages ------------------------------------------------------------------------


def _confirmed(nonce: str) -> bool:
    until = (session.get(SESSION_KEY) or {}).get(nonce)
    return isinstance(until, int | float) and until > now().timestamp()


def _remember(nonce: str) -> None:
    t = now().timestamp()
    kept = {k: v for k, v in (session.get(SESSION_KEY) or {}).items() if isinstance(v, int | float) and v > t}
    kept[nonce] = int(t + CONFIRMED_MINUTES * 60)
    session[SESSION_KEY] = dict(sorted(kept.items(), key=lambda kv: kv[1])[-MAX_REMEMBERED_LINKS:])


@bp.errorhandler(LinkInvalid)
def _link_problem(exc: LinkInvalid) -> Any:
    """Expired, tampered, used or locked: say which and how to reach the pharmacy, show nothing else."""
    reason = exc.reason if exc.reason in LINK_STATUS else "invalid"
    return _render("refills/link_problem.html", LINK_STATUS[reason], reason=reason,
                   link_days=settings().refill_link_days)


def _dob_form(token: str, *, errors: dict[str, list[str]] | None = None, status: int = 200) -> Any:
    values = {k: request.form.get(k, "") for k in ("month", "day", "year")} if request.method == "POST" else {}
    return _render("refills/link_dob.html", status, token=token, errors=errors or {}, values=values,
                   max_tries=links.MAX_DOB_ATTEMPTS)


@bp.get("/r/<token>")
def link(token: str) -> Any:
    """The link's first page asks only for the date of birth (a confirmed browser goes straight on)."""
    claims = services.open_link(token)
    if _confirmed(claims.nonce):
        return redirect(url_for(".link_refill", token=token), 303)
    return _dob_form(token)


@bp.post("/r/<token>")
@limiter.limit("10 per minute")
def link_confirm(token: str) -> Any:
    """Check the date of birth; a wrong one counts against the link (and is kept though the request rolls back)."""
    data, errors = load(BirthDateFormSchema(), form_values(request.form))
    if data is None:
        services.open_link(token)  # a bad link says so before any form message does
        return _dob_form(token, errors=errors, status=422)
    try:
        claims = services.confirm_birth_date(token, data["date_of_birth"])
    except ValidationFailed as exc:
        return _dob_form(token, errors=exc.fields, status=422)
    _remember(claims.nonce)
    return redirect(url_for(".link_refill", token=token), 303)


def _confirmed_claims(token: str) -> links.LinkClaims | None:
    """The link's claims if this browser confirmed the date of birth on it lately, else None."""
    claims = services.open_link(token, allow_used=True)
    return claims if _confirmed(claims.nonce) else None


@bp.get("/r/<token>/refill")
def link_refill(token: str) -> Any:
    """What the next fill is, when it will be ready, what it costs; one button asks for it."""
    claims = _confirmed_claims(token)
    if claims is None:
        return redirect(url_for(".link", token=token), 303)
    return _render("refills/link_refill.html", token=token, s=services.link_summary(claims))


@bp.post("/r/<token>/refill")
def link_request(token: str) -> Any:
    """The one click: open the request (idempotent, so a double tap makes one request)."""
    claims = _confirmed_claims(token)
    if claims is None:
        return redirect(url_for(".link", token=token), 303)
    data, errors = load(LinkRequestFormSchema(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Choose pick-up or shipping.", fields=errors)
    refill_flow.request(services.patient_actor(claims), claims.prescription_id or 0, source=RequestSource.LINK,
                            delivery=data["delivery"], claims=claims)
    return redirect(url_for(".link_requested", token=token), 303)


@bp.get("/r/<token>/requested")
def link_requested(token: str) -> Any:
    """The confirmation: the date and the price, and that an email follows."""
    claims = _confirmed_claims(token)
    if claims is None:
        return redirect(url_for(".link", token=token), 303)
    s = services.link_summary(claims)
    if s.open_request is None:
        return redirect(url_for(".link_refill", token=token), 303)
    return _render("refills/link_requested.html", token=token, s=s)


# ---- the pharmacy's pages -----------------------------------------------------------------------


@bp.get("/refills")
@staff_required
def queue() -> Any:
    """Open refill requests (patients out of medicine first, then the oldest; 50 a page, `?page=2`) and the latest
    decisions; the renewals awaited are on their own page (an old `?renewals_page=` address goes there)."""
    if "renewals_page" in request.args:
        return redirect(url_for(".renewals_queue", page=request.args.get("renewals_page", 1, type=int) or 1), 302)
    page = refill_queue.queue_page(current_actor(), page=request.args.get("page", 1, type=int) or 1)
    return _render("refills/queue.html", page=page, too_soon_percent=settings().too_soon_percent, today=today())


@bp.get("/refills/renewals")
@staff_required
def renewals_queue() -> Any:
    """Renewals to send or awaited from prescribers, oldest first (50 a page, `?page=2`)."""
    page = refill_queue.renewals_page(current_actor(), page=request.args.get("page", 1, type=int) or 1)
    return _render("refills/renewals.html", page=page)


@bp.post("/refills/<int:request_id>/approve")
@staff_required
def approve(request_id: int) -> Any:
    """Approve: the order for the next fill is created."""
    order = refill_flow.approve(current_actor(), request_id)
    too_soon = order.earliest_dispense_date is not None and order.earliest_dispense_date > today()
    when = f"; it may be dispensed from {rules.long_date(order.earliest_dispense_date)}" if too_soon else ""
    flash(f"Approved: order #{order.id} was created{when}. The patient will get an email.", "success")
    return redirect(url_for(".queue"), 303)


@bp.post("/refills/<int:request_id>/decline")
@staff_required
def decline(request_id: int) -> Any:
    """Decline with the reason the patient will read."""
    data, errors = load(DeclineSchema(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Give the reason the patient will see.", fields=errors)
    refill_flow.decline(current_actor(), request_id, data["reason"])
    flash("Declined. The patient will get an email with your reason.", "success")
    return redirect(url_for(".queue"), 303)


@bp.post("/refills/<int:request_id>/renewal")
@staff_required
def ask_renewal(request_id: int) -> Any:
    """Ask the prescriber for a renewal for this request's prescription."""
    renewal_flow.ask_prescriber(current_actor(), request_id=request_id)
    flash("Renewal request queued to the prescriber's email; print it to fax if needed (Renewals waiting). "
          "The patient is told it is in progress.", "success")
    return redirect(url_for(".queue", _anchor=f"request-{request_id}"), 303)


@bp.post("/prescriptions/<int:rx_id>/refill-requests")
@staff_required
def staff_request(rx_id: int) -> Any:
    """A patient calling in: staff open the request on their behalf."""
    data, errors = load(StaffRequestFormSchema(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Check the refill request form.", fields=errors)
    outcome = refill_flow.request(current_actor(), rx_id, source=RequestSource.STAFF,
                                      delivery=data["delivery"], note=data["note"])
    if outcome.created:
        flash("Refill request opened; it is in the queue below.", "success")
    else:
        flash("A request for this prescription was already open; nothing new was added.", "info")
    return redirect(url_for(".queue"), 303)


@bp.get("/renewals/<int:renewal_id>")
@staff_required
def renewal(renewal_id: int) -> Any:
    """The renewal request as a printable page, for prescribers reached by fax."""
    doc = renewals.renewal_document(current_actor(), renewal_id)
    cfg = settings()
    return _render("refills/renewal.html", doc=doc, pharmacy_address=cfg.pharmacy_address,
                   pharmacy_email=cfg.pharmacy_email, pharmacy_npi=cfg.pharmacy_npi,
                   printed_on=today())


@bp.post("/renewals/<int:renewal_id>/send")
@staff_required
def send_renewal(renewal_id: int) -> Any:
    """Send a renewal task to the prescriber (email in the outbox)."""
    renewal = renewal_flow.send_renewal(current_actor(), renewal_id)
    flash("Renewal request queued to the prescriber's email.", "success")
    back = request.form.get("page", 1, type=int) or 1  # the page of the list it was sent from
    return redirect(url_for(".renewals_queue", page=back if back > 1 else None, _anchor=f"renewal-{renewal.id}"), 303)
