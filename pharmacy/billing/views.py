"""Billing pages: price list, quotes, a patient's costs and payments, receipts, the Money and adherence reports.

Thin: validate the form with a schema, call one service, render. A refused form is shown again
with its field messages and status 422; nothing is saved (the unit of work rolls back on >= 400).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, stream_with_context, url_for

from pharmacy.billing import adherence as adherence_reports
from pharmacy.billing import charts, pricing, receipts, reports, services
from pharmacy.billing.rules import PaymentMethod, format_cents
from pharmacy.billing.schemas import PaymentForm, PriceForm, QuoteForm, ReportArgs, ShippingForm
from pharmacy.compounding.views import render_order
from pharmacy.core import uow
from pharmacy.core.auth import current_actor, staff_required
from pharmacy.core.context import settings
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.forms import form_values, load

bp = Blueprint("billing", __name__, url_prefix="/billing")

METHOD_LABELS = {"cash": "Cash", "card": "Card", "check": "Check", "hsa_fsa": "HSA/FSA"}
BAND_BADGES = {"below": "warn", "within": "ok", "above": "warn"}


@bp.app_template_filter("cents")
def cents_filter(value: int | None) -> str:
    """{{ amount|cents }} → "$45.00" (integer cents in, the one money format out)."""
    return "—" if value is None else format_cents(int(value))


def _globals() -> dict[str, Any]:
    return {"method_labels": METHOD_LABELS, "band_badges": BAND_BADGES, "methods": list(PaymentMethod)}


# ---- price list ------------------------------------------------------------------------------


def _prices_page(listing: pricing.PriceList, *, errors: dict | None = None, form: dict | None = None,
                 warning: str | None = None, status: int = 200) -> Any:
    return render_template("billing/prices.html", listing=listing, errors=errors or {}, form=form or {},
                           warning=warning, **_globals()), status


@bp.get("/prices")
@staff_required
def prices() -> Any:
    history = request.args.get("history") == "1"
    return _prices_page(pricing.price_list(current_actor(), include_retired=history))


@bp.post("/prices")
@staff_required
def set_price() -> Any:
    data, errors = load(PriceForm(), form_values(request.form))
    warning = None
    if data is not None:
        try:
            row = pricing.set_price(current_actor(), formula_id=data["formula_id"], quantity=data["quantity"],
                                     days_supply=data["days_supply"], price_cents=data["price"],
                                     accept_out_of_band=data["accept_out_of_band"])
        except pricing.PriceOutOfBand as exc:
            errors, warning = exc.fields, exc.message
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            note = " (outside the band, accepted)" if row.out_of_band else ""
            flash(f"{row.formula_code} × {row.quantity_text}: {format_cents(row.price_cents)} for {row.days_supply} days, "
                  f"{format_cents(row.monthly_equivalent_cents)} a month{note}. Past orders keep their price.", "success")
            return redirect(url_for("billing.prices"))
    listing = pricing.price_list(current_actor(), for_edit=True)
    return _prices_page(listing, errors=errors, form=dict(request.form), warning=warning, status=422)


@bp.post("/prices/<int(max=2147483647):entry_id>/retire")
@staff_required
def retire_price(entry_id: int) -> Any:
    row = pricing.retire_price(current_actor(), entry_id)
    flash(f"{row.formula_code} × {row.quantity_text} is off the price list (kept in the history).", "success")
    return redirect(url_for("billing.prices"))


@bp.post("/fees/shipping")
@staff_required
def set_shipping() -> Any:
    data, errors = load(ShippingForm(), form_values(request.form))
    if data is not None:
        try:
            amount = pricing.set_shipping_fee(current_actor(), data["shipping_fee"])
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            flash(f"Shipping is now {format_cents(amount)} a fill. Past orders keep their fee.", "success")
            return redirect(url_for("billing.prices"))
    listing = pricing.price_list(current_actor(), for_edit=True)
    return _prices_page(listing, errors=errors, form=dict(request.form), status=422)


@bp.get("/quote")
@staff_required
def quote() -> Any:
    asked = bool(request.args.get("formula_id") or request.args.get("quantity"))
    data, errors = load(QuoteForm(), form_values(request.args)) if asked else ({}, {})
    page = None
    if data:
        try:
            page = pricing.quote_page(current_actor(), **data)
        except ValidationFailed as exc:
            errors = exc.fields
    if page is None:
        page = pricing.quote_page(current_actor())
    return render_template("billing/quote.html", page=page, errors=errors, form=request.args, **_globals()), (
        422 if errors else 200)


# ---- a patient's costs and payments ------------------------------------------------------------


def _costs_page(costs: services.PatientCosts, *, errors: dict | None = None, form: dict | None = None,
                which: str = "", status: int = 200) -> Any:
    return render_template("billing/patient_costs.html", c=costs, errors=errors or {}, form=form or {}, which=which,
                           **_globals()), status


@bp.get("/patients/<int(max=2147483647):patient_id>/costs")
@staff_required
def patient_costs(patient_id: int) -> Any:
    page = request.args.get("page", 1, type=int)
    return _costs_page(services.patient_costs(current_actor(), patient_id, page=page))


def _money_post(patient_id: int, which: str) -> Any:
    values = form_values(request.form)
    back_to_order = values.pop("back", None) == "order" and which == "payment"  # paid at the dispense step
    data, errors = load(PaymentForm(), values)
    if data is not None:
        record = services.record_payment if which == "payment" else services.record_refund
        try:
            result = record(current_actor(), patient_id=patient_id, amount_cents=data["amount"], method=data["method"],
                            order_id=data["order_id"], reference=data["reference"], note=data["note"])
        except ValidationFailed as exc:
            errors = exc.fields
        else:
            word = "Payment" if which == "payment" else "Refund"
            flash(f"{word} of {format_cents(result.payment.amount_cents)} recorded (receipt {result.receipt_number}). "
                  f"Balance: {format_cents(result.balance.balance_cents)}"
                  f"{' (credit)' if result.balance.credit_cents else ''}.", "success")
            if back_to_order and data["order_id"]:
                return redirect(url_for("compounding.order", order_id=data["order_id"]) + "#dispense")
            return redirect(url_for("billing.patient_costs", patient_id=patient_id) + "#payments")
    order_id = request.form.get("order_id", type=int)
    if back_to_order and order_id:
        uow.discard()
        return render_order(order_id, status=422, message="The payment was not recorded.", errors=errors, step="pay")
    costs = services.patient_costs(current_actor(), patient_id, for_payment=True)
    return _costs_page(costs, errors=errors, form=dict(request.form), which=which, status=422)


@bp.post("/patients/<int(max=2147483647):patient_id>/payments")
@staff_required
def record_payment(patient_id: int) -> Any:
    return _money_post(patient_id, "payment")


@bp.post("/patients/<int(max=2147483647):patient_id>/refunds")
@staff_required
def record_refund(patient_id: int) -> Any:
    return _money_post(patient_id, "refund")


def _pdf(filename: str, body: bytes) -> Response:
    return Response(body, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.get("/payments/<int(max=2147483647):payment_id>/receipt.pdf")
@staff_required
def receipt(payment_id: int) -> Any:
    return _pdf(*receipts.receipt_pdf(current_actor(), payment_id))


@bp.get("/patients/<int(max=2147483647):patient_id>/statements/<int(max=9999):year>.pdf")
@staff_required
def statement(patient_id: int, year: int) -> Any:
    return _pdf(*receipts.statement_pdf(current_actor(), patient_id, year))


# ---- reports -----------------------------------------------------------------------------------


def _report_args() -> dict[str, Any]:
    data, errors = load(ReportArgs(), form_values(request.args))
    if data is None:
        raise ValidationFailed("Check the report's settings.", fields=errors)
    return data


# The navigation links "Money" to billing.reports: keep that endpoint name.
@bp.get("/reports", endpoint="reports")
@staff_required
def money() -> Any:
    page = reports.money_page(current_actor(), months=_report_args()["months"])
    cost_chart = charts.monthly_cost_chart(page.average.highest[:10], page.average.average_cents,
                                           band_max_cents=settings().price_band_max_cents)
    return render_template("billing/reports.html", page=page, chart=charts.revenue_chart(page.revenue),
                           cost_chart=cost_chart if page.average.highest else None, **_globals())


@bp.get("/reports/<name>.csv")
@staff_required
def report_csv(name: str) -> Any:
    args = _report_args()
    filename, stream = reports.export_csv(current_actor(), name, months=args["months"], window_days=args["window_days"])
    return Response(stream_with_context(stream), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/adherence")
@staff_required
def adherence() -> Any:
    report = adherence_reports.adherence(current_actor(), window_days=_report_args()["window_days"])
    return render_template("billing/adherence.html", report=report,
                           chart=charts.adherence_chart(report.distribution, report.threshold_percent), **_globals())
