"""Billing JSON API (/api/v1/billing): prices, quotes, payments, refunds, balances, reports.

Bearer tokens only (core.auth.api_auth), checked before the input is parsed, so an anonymous
caller gets 401 whatever it sends. Amounts are integer cents in and out.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from flask_smorest import Blueprint

from pharmacy.billing import adherence as adherence_reports
from pharmacy.billing import pricing, reports, services
from pharmacy.billing import schemas as s
from pharmacy.core.auth import api_auth, current_actor
from pharmacy.core.errors import ValidationFailed

blp = Blueprint("billing_api", __name__, url_prefix="/api/v1/billing",
                description="Prices, quotes, payments and refunds, balances and money reports (amounts in cents).")

ID = "int(max=2147483647)"


@blp.route("/prices", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingPriceListQuery, location="query")
@blp.response(200, s.BillingPriceListOut)
def list_prices(args: dict[str, Any]) -> Any:
    """The price list, each entry with its monthly equivalent and band flag."""
    return pricing.price_list(current_actor(), **args)


@blp.route("/prices", methods=["POST"])
@api_auth()
@blp.arguments(s.BillingPriceEntryIn)
@blp.response(201, s.BillingPriceEntryOut)
def set_price(data: dict[str, Any]) -> Any:
    """Set the price of a formula and quantity (retires the current entry; out of band needs accept_out_of_band)."""
    return pricing.set_price(current_actor(), **data)


@blp.route(f"/prices/<{ID}:entry_id>/retire", methods=["POST"])
@api_auth()
@blp.response(200, s.BillingPriceEntryOut)
def retire_price(entry_id: int) -> Any:
    """Take a price-list entry off the list (kept in the history)."""
    return pricing.retire_price(current_actor(), entry_id)


@blp.route("/fees/shipping", methods=["PUT"])
@api_auth()
@blp.arguments(s.BillingShippingFeeIn)
@blp.response(200, s.BillingShippingFeeOut)
def set_shipping(data: dict[str, Any]) -> Any:
    """Set the flat shipping fee per shipped fill."""
    return {"amount_cents": pricing.set_shipping_fee(current_actor(), data["amount_cents"])}


@blp.route("/quote", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingQuoteQuery, location="query")
@blp.response(200, s.BillingQuoteOut)
def get_quote(args: dict[str, Any]) -> Any:
    """Quote a fill of any formula, quantity and delivery."""
    return pricing.quote_for(current_actor(), **args)


@blp.route("/payments", methods=["POST"])
@api_auth()
@blp.arguments(s.BillingPaymentIn)
@blp.response(201, s.BillingPaymentOut)
def record_payment(data: dict[str, Any]) -> Any:
    """Record a payment (whole, partial or more than owed: the excess becomes credit)."""
    with _amount_errors_as_sent():
        return services.record_payment(current_actor(), **data)


@blp.route("/refunds", methods=["POST"])
@api_auth()
@blp.arguments(s.BillingPaymentIn)
@blp.response(201, s.BillingPaymentOut)
def record_refund(data: dict[str, Any]) -> Any:
    """Record a refund (never more than was paid, net of earlier refunds)."""
    with _amount_errors_as_sent():
        return services.record_refund(current_actor(), **data)


@contextlib.contextmanager
def _amount_errors_as_sent() -> Iterator[None]:
    """The services name the amount `amount`, as the counter's form does; this API's field is `amount_cents`, so a
    client that maps errors to its fields finds the message beside the amount it sent."""
    try:
        yield
    except ValidationFailed as exc:
        if "amount" in exc.fields:
            exc.fields["amount_cents"] = exc.fields.pop("amount")
        raise


@blp.route(f"/patients/<{ID}:patient_id>/balance", methods=["GET"])
@api_auth()
@blp.response(200, s.BillingLedgerOut)
def patient_balance(patient_id: int) -> Any:
    """A patient's charges, payments, refunds and balance."""
    return services.balance(current_actor(), patient_id)


@blp.route(f"/patients/<{ID}:patient_id>/costs", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingCostsQuery, location="query")
@blp.response(200, s.BillingPatientCostsOut)
def patient_costs(args: dict[str, Any], patient_id: int) -> Any:
    """A patient's regimen cost, spend this year, fills with balances and payments."""
    return services.patient_costs(current_actor(), patient_id, page=args["page"])


@blp.route("/reports/revenue", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingMonthsQuery, location="query")
@blp.response(200, s.BillingMonthRevenueOut(many=True))
def revenue(args: dict[str, Any]) -> Any:
    """Payments minus refunds per month (the pharmacy's months), oldest first."""
    return reports.revenue_by_month(current_actor(), args["months"])


@blp.route("/reports/fills-by-form", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingMonthsQuery, location="query")
@blp.response(200, s.BillingFormFillsOut(many=True))
def fills_by_form(args: dict[str, Any]) -> Any:
    """Dispensed fills per form."""
    return reports.fills_by_form(current_actor(), args["months"])


@blp.route("/reports/average-monthly-cost", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingMonthsQuery, location="query")
@blp.response(200, s.BillingAverageCostOut)
def average_monthly_cost(args: dict[str, Any]) -> Any:
    """Average monthly cost per patient, with the highest."""
    return reports.average_monthly_cost(current_actor(), args["months"])


@blp.route("/reports/outstanding", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingLimitQuery, location="query")
@blp.response(200, s.BillingOutstandingOut)
def outstanding(args: dict[str, Any]) -> Any:
    """Patients who owe, largest balance first."""
    return reports.outstanding_balances(current_actor(), args["limit"])


@blp.route("/reports/out-of-band", methods=["GET"])
@api_auth()
@blp.response(200, s.BillingPriceEntryOut(many=True))
def out_of_band() -> Any:
    """Current price-list entries outside the monthly band."""
    return reports.out_of_band(current_actor())


@blp.route("/reports/adherence", methods=["GET"])
@api_auth()
@blp.arguments(s.BillingAdherenceQuery, location="query")
@blp.response(200, s.BillingAdherenceOut)
def adherence(args: dict[str, Any]) -> Any:
    """PDC distribution and the patients below the threshold (names for clinical staff only)."""
    return adherence_reports.adherence(current_actor(), window_days=args["window_days"], limit=args["limit"])
