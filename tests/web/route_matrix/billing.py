"""Routes of billing: price list, quotes, patient costs and payments, receipts, reports, and the billing API.

Order matters within one principal's run: the payment routes come before the refunds, so a
technician or pharmacist really reaches them (a refund needs something paid).
"""
from tests.web.route_matrix import Route, api_route, staff_page

ADMIN_ONLY = {"technician": "forbidden", "pharmacist": "forbidden"}
CLINICAL_ONLY = {"admin": "forbidden"}  # a patient's costs show drugs and diagnoses: not for admins
REPORTS = {"technician": "forbidden"}


def _price_form(w):
    return {"formula_id": str(w["formula"].id), "quantity": "60", "days_supply": "60", "price": "110.00"}


def _price_json(w):
    return {"formula_id": w["formula"].id, "quantity": "120", "days_supply": 120, "price_cents": 22000}


def _payment_json(w, cents=1000):
    return {"patient_id": w["patient"].id, "order_id": w["order"].id, "method": "card", "amount_cents": cents}


ROUTES: list[Route] = [
    staff_page("billing.prices", lambda w: "/billing/prices"),
    staff_page("billing.set_price", lambda w: "/billing/prices", method="POST", data=_price_form, **ADMIN_ONLY),
    staff_page("billing.retire_price", lambda w: "/billing/prices/999999/retire", method="POST",
               technician="forbidden", pharmacist="forbidden", admin="missing"),
    staff_page("billing.set_shipping", lambda w: "/billing/fees/shipping", method="POST",
               data=lambda w: {"shipping_fee": "9.95"}, **ADMIN_ONLY),
    staff_page("billing.quote", lambda w: f"/billing/quote?formula_id={w['formula'].id}&quantity=30&delivery=ship"),
    staff_page("billing.patient_costs", lambda w: f"/billing/patients/{w['patient'].id}/costs", **CLINICAL_ONLY),
    staff_page("billing.record_payment", lambda w: f"/billing/patients/{w['patient'].id}/payments", method="POST",
               data=lambda w: {"amount": "10.00", "method": "cash", "order_id": str(w["order"].id)}, **CLINICAL_ONLY),
    staff_page("billing.record_refund", lambda w: f"/billing/patients/{w['patient'].id}/refunds", method="POST",
               data=lambda w: {"amount": "1.00", "method": "cash"}, **CLINICAL_ONLY),
    # test_route_matrix reads every body as UTF-8 text, which a PDF is not: these two ask for what does not
    # exist (an unknown payment: 404; a year out of range: 422), which still shows who gets past the role
    # check. The PDFs themselves are tested in tests/integration/test_receipts.py and tests/web/test_billing_views.py.
    staff_page("billing.receipt", lambda w: "/billing/payments/999999/receipt.pdf", technician="missing",
               pharmacist="missing", admin="forbidden"),
    staff_page("billing.statement", lambda w: f"/billing/patients/{w['patient'].id}/statements/1999.pdf",
               **CLINICAL_ONLY),
    staff_page("billing.reports", lambda w: "/billing/reports", **REPORTS),
    staff_page("billing.report_csv", lambda w: "/billing/reports/outstanding.csv", **REPORTS),
    staff_page("billing.adherence", lambda w: "/billing/adherence", **REPORTS),
]

ROUTES += [
    api_route("billing_api.list_prices", lambda w: "/api/v1/billing/prices"),
    api_route("billing_api.set_price", lambda w: "/api/v1/billing/prices", method="POST", data=_price_json, **ADMIN_ONLY),
    api_route("billing_api.retire_price", lambda w: "/api/v1/billing/prices/999999/retire", method="POST",
              technician="forbidden", pharmacist="forbidden", admin="missing"),
    api_route("billing_api.set_shipping", lambda w: "/api/v1/billing/fees/shipping", method="PUT",
              data=lambda w: {"amount_cents": 995}, **ADMIN_ONLY),
    api_route("billing_api.get_quote", lambda w: f"/api/v1/billing/quote?formula_id={w['formula'].id}&quantity=30"),
    api_route("billing_api.record_payment", lambda w: "/api/v1/billing/payments", method="POST", data=_payment_json,
              **CLINICAL_ONLY),
    api_route("billing_api.record_refund", lambda w: "/api/v1/billing/refunds", method="POST",
              data=lambda w: _payment_json(w, 100), **CLINICAL_ONLY),
    api_route("billing_api.patient_balance", lambda w: f"/api/v1/billing/patients/{w['patient'].id}/balance",
              **CLINICAL_ONLY),
    api_route("billing_api.patient_costs", lambda w: f"/api/v1/billing/patients/{w['patient'].id}/costs",
              **CLINICAL_ONLY),
    api_route("billing_api.revenue", lambda w: "/api/v1/billing/reports/revenue?months=12", **REPORTS),
    api_route("billing_api.fills_by_form", lambda w: "/api/v1/billing/reports/fills-by-form", **REPORTS),
    api_route("billing_api.average_monthly_cost", lambda w: "/api/v1/billing/reports/average-monthly-cost", **REPORTS),
    api_route("billing_api.outstanding", lambda w: "/api/v1/billing/reports/outstanding", **REPORTS),
    api_route("billing_api.out_of_band", lambda w: "/api/v1/billing/reports/out-of-band", **REPORTS),
    api_route("billing_api.adherence", lambda w: "/api/v1/billing/reports/adherence", **REPORTS),
]
