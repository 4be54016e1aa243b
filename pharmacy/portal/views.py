"""The patient portal under /my/: its own cookie, its own sign-in (a one-time code and the date of birth), short
sessions, and the pages a patient needs — my LDN, a refill, orders, money, reminders, delivery, side effects and
the calendar.

The portal cookie (Path=/my, HttpOnly, SameSite=Lax; `__Secure-portal` and Secure in production) is separate from
the staff session: it holds a random session token (its hash is a portal_sessions row), a code challenge's token,
and a per-browser nonce from which the forms' CSRF token is derived. The portal never writes Flask's session.
Views are thin: a schema checks the form, one service does the work, the page says what happened in plain words.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from pharmacy.autorefill import services as autorefill
from pharmacy.billing import receipts
from pharmacy.billing.rules import format_cents
from pharmacy.core.clock import local_date
from pharmacy.core.context import settings, today
from pharmacy.core.errors import Conflict, DomainError, LinkInvalid, ValidationFailed
from pharmacy.core.forms import form_values, load
from pharmacy.extensions import csrf, limiter
from pharmacy.patients import self_service
from pharmacy.patients.rules import LABELS as EFFECT_LABELS
from pharmacy.patients.rules import SideEffect
from pharmacy.portal import schemas, services
from pharmacy.refills.rules import long_date
from pharmacy.reminders import rendering
from pharmacy.reminders.rules import MessageKind
from pharmacy.sms import rules as sms_rules
from pharmacy.sms import services as sms
from pharmacy.workflows import patient_changes

bp = Blueprint("portal", __name__, url_prefix="/my")
feeds = Blueprint("portal_feed", __name__)  # the calendar subscription address: no cookie, outside /my
csrf.exempt(bp)  # the portal checks its own token (derived from its own cookie), see _check_csrf
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# What patients may report, in their words (patients.rules keeps the pharmacist's labels).
EFFECT_CHOICES = [
    (SideEffect.VIVID_DREAMS, "Vivid dreams"), (SideEffect.INSOMNIA, "Trouble sleeping"),
    (SideEffect.HEADACHE, "Headache"), (SideEffect.NAUSEA, "Feeling sick (nausea)"),
    (SideEffect.CONSTIPATION, "Constipation"), (SideEffect.DIARRHOEA, "Diarrhea"),
    (SideEffect.MORNING_STIFFNESS, "Stiff muscles in the morning"), (SideEffect.DRY_MOUTH, "Dry mouth"),
    (SideEffect.SYMPTOM_FLARE, "My MS symptoms got worse"), (SideEffect.AGITATION, "Feeling agitated or restless"),
    (SideEffect.OTHER, "Something else"),
]
NOTICES = {
    "signed_out": "You are signed out.",
    "session_ended": "For your privacy you were signed out after a while without activity. Please sign in again.",
    "refill": "We got your refill request. We will let you know when it is ready.",
    "refill_again": "You had already asked for this refill. We are on it.",
    "reminders": "Your reminder choices are saved.",
    "skipped": "The next reminder is skipped.",
    "nothing_to_skip": "No reminder is planned right now, so there was nothing to skip.",
    "number_code": "We sent a code by text. Type it below to confirm your number.",
    "number_ok": "Your mobile number is confirmed. You can now choose text messages.",
    "texts_stopped": "We will not send you text messages any more.",
    "delivery": "Your delivery choice is saved.",
    "side_effect": "Thank you. The pharmacist will look at your report and call you if needed.",
    "feed_new": "Your new calendar address is ready. The old one no longer works.",
    "feed_revoked": "Your calendar address no longer works.",
    "auto_join": "Automatic refills are on for this medicine.",
    "auto_leave": "Automatic refills are off for this medicine.",
}


# ---- the portal cookie ---------------------------------------------------------------------------------------------


def _cookie_name() -> str:
    return "__Secure-portal" if current_app.config.get("SESSION_COOKIE_SECURE") else "portal"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="ldn.portal.cookie")


def _state() -> dict[str, Any]:
    if "portal_state" not in g:
        raw = request.cookies.get(_cookie_name(), "")
        try:
            data = _serializer().loads(raw) if raw else {}
        except BadSignature:
            data = {}
        if not isinstance(data, dict) or not isinstance(data.get("b"), str):
            data = {"b": secrets.token_urlsafe(16)}
            g.portal_dirty = True
        g.portal_state = data
    return g.portal_state


def _put(**values: Any) -> None:
    state = _state()
    for key, value in values.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    g.portal_dirty = True


def csrf_token() -> str:
    nonce = _state()["b"]
    return hmac.new(current_app.config["SECRET_KEY"].encode(), f"portal-csrf:{nonce}".encode(),
                    hashlib.sha256).hexdigest()


@bp.before_request
def _check_csrf() -> None:
    _state()
    if request.method == "POST" and current_app.config.get("WTF_CSRF_ENABLED", True):
        sent = request.form.get("csrf_token", "")
        if not hmac.compare_digest(sent.encode(), csrf_token().encode()):
            raise ValidationFailed("This form has expired. Please go back, reload the page and try again.")


@bp.after_request
def _write_cookie(response: Response) -> Response:
    if g.get("portal_dirty"):
        response.set_cookie(_cookie_name(), _serializer().dumps(g.portal_state), path="/my", httponly=True,
                            samesite="Lax", secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")))
    return response


# ---- signed in or not ----------------------------------------------------------------------------------------------


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """The patient of a live session, or the sign-in page (saying the session ended, if it did)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _state().get("s")
        row = services.open_session(token)
        if row is None:
            if token:
                _put(s=None, n="session_ended")
            return redirect(url_for("portal.sign_in"), 303)
        g.portal_actor = services.patient_actor(row.patient_id)
        g.portal_session = row
        return view(*args, **kwargs)

    return wrapper


def _actor() -> Any:
    return g.portal_actor


def _day(d: Any) -> str:
    return f"{_WEEKDAYS[d.weekday()]}, {long_date(d)}" if d else ""


def _render(template: str, status: int = 200, **context: Any) -> Any:
    notice = _state().get("n")
    if notice:
        _put(n=None)
    row = g.get("portal_session")
    return render_template(
        template, notice=NOTICES.get(notice or ""), csrf=csrf_token(), money=format_cents, day=_day,
        signed_in=row is not None, session_ends=services.session_ends_at(row).isoformat() if row else None,
        idle_seconds=settings().portal_idle_minutes * 60, today=today(), pharmacy_email=settings().pharmacy_email,
        **context), status


def _done(endpoint: str, notice: str, **values: Any) -> Any:
    _put(n=notice)
    return redirect(url_for(endpoint, **values), 303)


@bp.errorhandler(DomainError)
def _problem(exc: DomainError) -> Any:
    """Errors as a portal page in plain words (never the staff layout), with the same status."""
    return _render("portal/problem.html", exc.status, message=exc.message)


# ---- signing in ----------------------------------------------------------------------------------------------------


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit("10 per minute; 30 per hour", methods=["POST"])
def sign_in() -> Any:
    """Step 1: where to send the code (an email address, or a mobile number confirmed earlier)."""
    if request.method == "GET":
        if services.open_session(_state().get("s")) is not None:
            return redirect(url_for(".home"), 303)
        return _render("portal/sign_in.html", errors={}, contact="")
    data, errors = load(schemas.ContactForm(), form_values(request.form))
    if data is None:
        return _render("portal/sign_in.html", 422, errors=errors, contact=request.form.get("contact", ""))
    try:
        sent = services.start_sign_in(data["contact"])
    except ValidationFailed as exc:
        return _render("portal/sign_in.html", 422, errors=exc.fields, contact=data["contact"])
    _put(c=sent.token, to=sent.shown_to, ch=sent.channel, s=None)
    return redirect(url_for(".enter_code"), 303)


@bp.route("/sign-in/code", methods=["GET", "POST"])
@limiter.limit("10 per minute; 40 per hour", methods=["POST"])
def enter_code() -> Any:
    """Step 2: the code and the date of birth."""
    state = _state()
    if not state.get("c"):
        return redirect(url_for(".sign_in"), 303)
    context = {"shown_to": state.get("to", ""), "channel": state.get("ch", "email")}
    if request.method == "GET":
        return _render("portal/code.html", errors={}, values={}, **context)
    values = {k: request.form.get(k, "") for k in ("month", "day", "year", "code")}
    data, errors = load(schemas.CodeForm(), form_values(request.form))
    if data is None:
        if not {"month", "day", "year", "date_of_birth"} & set(errors):
            # marshmallow skips the date's completeness check when the code has an error: ask it apart, so a
            # patient who got both wrong is told both at once.
            date_parts = {k: v for k, v in form_values(request.form).items() if k in ("month", "day", "year")}
            errors = {**load(schemas.BirthDateFormSchema(), date_parts)[1], **errors}
        return _render("portal/code.html", 422, errors=errors, values=values, **context)
    try:
        token, _patient_id = services.verify_sign_in(state.get("c"), data["code"], data["date_of_birth"])
    except ValidationFailed as exc:
        return _render("portal/code.html", 422, errors=exc.fields, values=values, **context)
    except Conflict as exc:
        _put(c=None)
        return _render("portal/sign_in.html", 409, errors={"contact": [exc.message]}, contact="")
    # A new form token with the new session: a token read before sign-in (by a page or a person beside the
    # patient) does not carry over into the signed-in portal.
    _put(c=None, to=None, ch=None, s=token, b=secrets.token_urlsafe(16))
    return redirect(url_for(".home"), 303)


@bp.post("/sign-out")
def sign_out() -> Any:
    services.end_session(_state().get("s"))
    _put(s=None, n="signed_out", b=secrets.token_urlsafe(16))
    return redirect(url_for(".sign_in"), 303)


@bp.post("/session/extend")
@signed_in
def extend() -> Any:
    """"Stay signed in" (the warning before the idle limit): opening the session restarted its clock."""
    return Response(status=204)


# ---- my LDN, refills, orders, money --------------------------------------------------------------------------------


@bp.get("/")
@signed_in
def home() -> Any:
    return _render("portal/home.html", my=services.my_ldn(_actor()))


@bp.route("/refill/<int:rx_id>", methods=["GET", "POST"])
@signed_in
def refill(rx_id: int) -> Any:
    """The same facts, rules and price as the refill link; one button asks for it."""
    if request.method == "POST":
        data, errors = load(schemas.RefillForm(), form_values(request.form))
        if data is None:
            raise ValidationFailed("Choose pick-up or shipping.", fields=errors)
        outcome = services.ask_refill(_actor(), rx_id, data["delivery"])
        return _done(".refill", "refill" if outcome.created else "refill_again", rx_id=rx_id)
    return _render("portal/refill.html", item=services.refill_view(_actor(), rx_id))


@bp.post("/auto-refill/<int:rx_id>")
@signed_in
def auto_refill(rx_id: int) -> Any:
    data, errors = load(schemas.AutoRefillForm(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Choose what to do.", fields=errors)
    if data["action"] == "join":
        autorefill.enrol(_actor(), rx_id)
        return _done(".refill", "auto_join", rx_id=rx_id)
    if data["action"] == "leave":
        autorefill.leave(_actor(), rx_id)
        return _done(".refill", "auto_leave", rx_id=rx_id)
    said = autorefill.skip_next(_actor(), rx_id)
    return _render("portal/skipped.html", message=said)


@bp.route("/auto-refill/skip/<token>", methods=["GET", "POST"])
@limiter.limit("20 per minute")
def skip_link(token: str) -> Any:
    """The automatic refill's one-click skip (from its email or text): one button, no sign-in, no health details."""
    try:
        link = autorefill.open_skip_link(token)
    except LinkInvalid:
        return _render("portal/problem.html", 400, message="This link does not work. Sign in or call us to skip "
                                                            "your automatic refill.")
    if request.method == "GET":
        refusal = autorefill.not_skippable(link.request_id, link.actor.patient_id or 0)
        if refusal is not None:
            return _render("portal/problem.html", 409, message=refusal)
        return _render("portal/skip.html", token=token)
    said = autorefill.skip_next(link.actor, link.actor.prescription_id or 0, announced_request=link.request_id)
    return _render("portal/skipped.html", message=said)


@bp.get("/orders")
@signed_in
def orders() -> Any:
    return _render("portal/orders.html", fills=services.fill_history(_actor()))


@bp.get("/money")
@signed_in
def money() -> Any:
    return _render("portal/money.html", m=services.money(_actor()))


def _pdf(filename: str, body: bytes) -> Response:
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/receipts/<int:payment_id>.pdf")
@signed_in
def receipt(payment_id: int) -> Any:
    return _pdf(*receipts.own_receipt_pdf(_actor(), payment_id))


@bp.get("/statements/<int(max=9999):year>.pdf")
@signed_in
def statement(year: int) -> Any:
    return _pdf(*receipts.own_statement_pdf(_actor(), year))


# ---- reminders, texts, delivery, side effects ----------------------------------------------------------------------


def _reminders_page(status: int = 200, *, errors: dict[str, list[str]] | None = None,
                    number_errors: dict[str, list[str]] | None = None) -> Any:
    contact = services.contact_view(_actor())
    return _render("portal/reminders.html", status, c=contact, errors=errors or {}, number_errors=number_errors or {},
                   masked=sms_rules.masked, waiting_code=bool(_state().get("vc")), shown_to=_state().get("vto", ""))


@bp.route("/reminders", methods=["GET", "POST"])
@signed_in
def reminders() -> Any:
    """Reminders on or off; by email, text or both; a pause until a date."""
    if request.method == "GET":
        return _reminders_page()
    data, errors = load(schemas.RemindersForm(), form_values(request.form))
    if data is None:
        return _reminders_page(422, errors=errors)
    try:
        services.set_reminders(_actor(), on=data["reminders"] == "on", channel=data["channel"],
                               paused_until=data["paused_until"])
    except ValidationFailed as exc:
        return _reminders_page(422, errors=exc.fields)
    return _done(".reminders", "reminders")


@bp.post("/reminders/skip-next")
@signed_in
def skip_next() -> Any:
    day = services.skip_next_reminder(_actor())
    return _done(".reminders", "skipped" if day else "nothing_to_skip")


@bp.post("/reminders/number")
@signed_in
@limiter.limit("5 per minute; 20 per hour")
def number() -> Any:
    """Send a code by text to the mobile number the patient typed."""
    data, errors = load(schemas.NumberForm(), form_values(request.form))
    if data is None:
        return _reminders_page(422, number_errors=errors)
    try:
        sent = services.start_number_check(_actor(), data["phone"])
    except ValidationFailed as exc:
        return _reminders_page(422, number_errors=exc.fields)
    _put(vc=sent.token, vto=sent.shown_to)
    return _done(".reminders", "number_code", _anchor="texts")


@bp.post("/reminders/number/confirm")
@signed_in
@limiter.limit("10 per minute")
def number_confirm() -> Any:
    data, errors = load(schemas.NumberConfirmForm(), form_values(request.form))
    if data is None:
        return _reminders_page(422, number_errors=errors)
    try:
        services.confirm_number(_actor(), _state().get("vc"), data["code"], consent=data["consent"])
    except ValidationFailed as exc:
        return _reminders_page(422, number_errors=exc.fields)
    _put(vc=None, vto=None)
    return _done(".reminders", "number_ok", _anchor="texts")


@bp.post("/reminders/stop-texts")
@signed_in
def stop_texts() -> Any:
    sms.stop_texts(_actor())
    return _done(".reminders", "texts_stopped", _anchor="texts")


@bp.route("/delivery", methods=["GET", "POST"])
@signed_in
def delivery() -> Any:
    patient = self_service.own_patient(_actor())
    if request.method == "GET":
        return _render("portal/delivery.html", p=patient, errors={}, form={})
    form = form_values(request.form)
    data, errors = load(schemas.DeliveryForm(), form)
    if data is None:
        return _render("portal/delivery.html", 422, p=patient, errors=errors, form=form)
    try:
        patient_changes.update_own_delivery(_actor(), delivery=data["delivery"], address=data)
    except ValidationFailed as exc:
        return _render("portal/delivery.html", 422, p=patient, errors=exc.fields, form=form)
    return _done(".delivery", "delivery")


@bp.route("/side-effects", methods=["GET", "POST"])
@signed_in
def side_effects() -> Any:
    """Tell the pharmacist about a side effect: it goes to their side-effect log and their Today page."""
    if request.method == "GET":
        return _render("portal/side_effects.html", choices=EFFECT_CHOICES, errors={}, form={})
    form = form_values(request.form)
    data, errors = load(schemas.SideEffectForm(), form)
    if data is None:
        return _render("portal/side_effects.html", 422, choices=EFFECT_CHOICES, errors=errors, form=form)
    try:
        self_service.report_side_effect(_actor(), effect=data["effect"], persistent=data["persistent"],
                                        started_on=data["started_on"], note=data["note"])
    except ValidationFailed as exc:
        return _render("portal/side_effects.html", 422, choices=EFFECT_CHOICES, errors=exc.fields, form=form)
    return _done(".side_effects", "side_effect")


# ---- the calendar --------------------------------------------------------------------------------------------------


def coming_up(item: services.MyPrescription) -> list[tuple[date, str]]:
    """The calendar page's list in date order, from today on: the dose changes, the order-by day, the run-out."""
    dates = [(start, f"your dose changes to {dose} a day") for start, dose in item.step_starts[1:]]
    if item.order_by:
        dates.append((item.order_by, "ask for your refill by this day"))
    if item.run_out:
        dates.append((item.run_out, "your medicine runs out"))
    return sorted(d for d in dates if d[0] >= today())


@bp.get("/calendar")
@signed_in
def calendar() -> Any:
    feed_token = _state().get("ft")
    if feed_token:
        _put(ft=None)
    live = services.live_feed(_actor().patient_id)
    url = url_for("portal_feed.feed", token=feed_token, _external=False) if feed_token else None
    return _render("portal/calendar.html", my=services.my_ldn(_actor()), live=live, coming_up=coming_up,
                   feed_url=(settings().base_url + url) if url else None)


@bp.get("/calendar.ics")
@signed_in
def calendar_download() -> Any:
    body = services.calendar_ics(_actor(), show_drug_name=request.args.get("names") == "1")
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Disposition"] = 'attachment; filename="pharmacy-calendar.ics"'
    return response


@bp.post("/calendar/feed")
@signed_in
def calendar_feed_new() -> Any:
    data, errors = load(schemas.FeedForm(), form_values(request.form))
    if data is None:
        raise ValidationFailed("Check the form.", fields=errors)
    token = services.new_feed(_actor(), show_drug_name=data["show_drug_name"])
    _put(ft=token)
    return _done(".calendar", "feed_new")


@bp.post("/calendar/feed/revoke")
@signed_in
def calendar_feed_revoke() -> Any:
    services.revoke_feed(_actor())
    return _done(".calendar", "feed_revoked")


@feeds.get("/calendar/<token>.ics")
@limiter.limit("60 per hour")
def feed(token: str) -> Any:
    """A calendar app's subscription: the private address is the key; revoked, it is simply not found."""
    return Response(services.feed_ics(token), mimetype="text/calendar")


def init_app(app: Flask) -> None:
    app.register_blueprint(feeds)
    rendering.CONTEXT_PROVIDERS[MessageKind.ONE_TIME_CODE] = services.code_context
    rendering.CONTEXT_PROVIDERS[MessageKind.AUTO_REFILL_REQUESTED] = autorefill.skip_context
    app.jinja_env.globals.setdefault("effect_labels", EFFECT_LABELS)

    @app.template_filter("localday")
    def _localday(at: Any) -> str:
        return _day(local_date(at, settings().timezone)) if at else ""
