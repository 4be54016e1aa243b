"""Billing pages over HTTP: forms refuse bad input with field messages and record nothing; PDFs, CSV and
charts come back as they should; and the revenue chart is drawn by a real browser (Playwright + chromium).
"""
from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader

from pharmacy.billing.models import Payment, PriceEntry
from pharmacy.core.clock import FixedClock
from pharmacy.extensions import db
from pharmacy.workflows import orders as order_flow
from tests import factories
from tests.browser.conftest import LiveServer
from tests.conftest import PASSWORD, T0, login

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


def as_(client: FlaskClient, filled: dict[str, Any], who: str) -> FlaskClient:
    login(client, filled["staff"][who])
    return client


def count(app: Flask, model: type) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def text_of(response: Any) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


# ---- price list -------------------------------------------------------------------------------


def test_price_list_page_shows_monthly_equivalents(client: FlaskClient, filled: dict[str, Any]) -> None:
    page = text_of(as_(client, filled, "technician").get("/billing/prices"))
    assert "LDN-CAP-4.5" in page and "$155.00" in page and "$51.67" in page  # 90 capsules: $155 / 90 days × 30
    assert "in band" in page and "Set a price" not in page  # technicians read prices, admins change them


def test_out_of_band_price_needs_an_explicit_confirmation(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "admin")
    before = count(app, PriceEntry)
    form = {"formula_id": str(filled["formula_id"]), "quantity": "90", "days_supply": "90", "price": "129.00"}
    refused = client.post("/billing/prices", data=form)
    assert refused.status_code == 422
    page = text_of(refused)
    assert "Outside the expected band: not saved yet" in page and "$43.00 a month is below the expected $45.00–$100.00" in page
    assert 'value="129.00"' in page  # the form keeps what was typed
    assert count(app, PriceEntry) == before
    saved = client.post("/billing/prices", data={**form, "accept_out_of_band": "1"})
    assert saved.status_code == 302
    assert count(app, PriceEntry) == before + 1
    page = text_of(client.get("/billing/prices"))
    assert "$129.00" in page and "$43.00" in page and "below band" in page
    history = text_of(client.get("/billing/prices?history=1"))
    assert "$155.00" in history and "Retired" in history


@pytest.mark.parametrize(("field", "value", "message"), [
    ("price", "abc", "Enter an amount, like 45.00."), ("price", "-5", "An amount cannot be negative."),
    ("price", "4.999", "Use at most two decimals"), ("days_supply", "0", "a number from 1 to 366"),
    ("quantity", "x", "Enter a number"),
])
def test_bad_price_form_shows_field_messages(app: Flask, client: FlaskClient, filled: dict[str, Any], field: str, value: str,
                                             message: str) -> None:
    as_(client, filled, "admin")
    before = count(app, PriceEntry)
    form = {"formula_id": str(filled["formula_id"]), "quantity": "30", "days_supply": "30", "price": "50.00", field: value}
    response = client.post("/billing/prices", data=form)
    assert response.status_code == 422
    assert message in text_of(response)
    assert count(app, PriceEntry) == before


def test_only_admins_post_prices(client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "pharmacist")
    assert client.post("/billing/prices", data={"formula_id": "1", "quantity": "30", "days_supply": "30",
                                                "price": "50"}).status_code == 403
    assert client.post("/billing/prices", data={"price": "nonsense"}).status_code == 403  # the role first
    assert client.post("/billing/fees/shipping", data={"shipping_fee": "1"}).status_code == 403


def test_shipping_fee_and_quote_pages(client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "admin")
    assert client.post("/billing/fees/shipping", data={"shipping_fee": "9.95"}).status_code == 302
    assert client.post("/billing/fees/shipping", data={"shipping_fee": "2000"}).status_code == 422
    quote = text_of(client.get(f"/billing/quote?formula_id={filled['formula_id']}&quantity=45&delivery=ship"))
    assert "$82.50" in quote and "$9.95" in quote and "$92.45" in quote and "pro-rated" in quote
    bad = client.get(f"/billing/quote?formula_id={filled['formula_id']}&quantity=-1")
    assert bad.status_code == 422 and "Must be at least 0.001" in text_of(bad)


# ---- payments -----------------------------------------------------------------------------------


def pay_form(amount: str, method: str = "cash", order_id: int | str = "", **extra: str) -> dict[str, str]:
    return {"amount": amount, "method": method, "order_id": str(order_id), **extra}


def test_patient_cost_page_and_three_partial_payments(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "technician")
    url = f"/billing/patients/{filled['patient_id']}"
    page = text_of(client.get(url + "/costs"))
    assert "Record a payment" in page and "$55.00" in page
    for amount in ("18.33", "18.33", "$18.34"):
        response = client.post(url + "/payments", data=pay_form(amount, "card", filled["order_id"], reference="slip 7"))
        assert response.status_code == 302
    page = text_of(client.get(url + "/costs"))
    assert "Payment of $18.34 recorded" in page and "Balance: $0.00." in page
    assert 'id="owed">$0.00' in page and 'id="spent">$55.00' in page
    assert count(app, Payment) == 3


def test_overpayment_shows_as_credit(client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "pharmacist")
    url = f"/billing/patients/{filled['patient_id']}"
    assert client.post(url + "/payments", data=pay_form("60.01", "check", filled["order_id"])).status_code == 302
    page = text_of(client.get(url + "/costs"))
    assert "Balance: -$5.01 (credit)." in page and 'id="credit">$5.01' in page and "$5.01 credit" in page


@pytest.mark.parametrize(("form", "field_message"), [
    (pay_form("abc"), "Enter an amount, like 45.00."),
    (pay_form("-5.00"), "An amount cannot be negative."),
    (pay_form("0"), "Enter an amount above $0.00."),
    (pay_form("12.345"), "Use at most two decimals (cents), like 45.50."),
    (pay_form("10", method="bitcoin"), "Choose cash, card, check or HSA/FSA."),
    (pay_form("10", order_id="abc"), "Choose the fill it is for, or the account."),
])
def test_bad_payment_form_records_nothing(app: Flask, client: FlaskClient, filled: dict[str, Any], form: dict[str, str],
                                          field_message: str) -> None:
    as_(client, filled, "technician")
    response = client.post(f"/billing/patients/{filled['patient_id']}/payments", data=form)
    assert response.status_code == 422
    assert field_message in text_of(response)
    assert count(app, Payment) == 0


def test_payment_on_a_cancelled_order_is_a_clear_422(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    with app.test_request_context("/"):
        order_flow.cancel(filled["world"]["pharmacist"], filled["order_id"], "prescriber stopped it")
        db.session.commit()
    as_(client, filled, "technician")
    response = client.post(f"/billing/patients/{filled['patient_id']}/payments",
                           data=pay_form("55.00", "card", filled["order_id"]))
    assert response.status_code == 422
    assert "This order was cancelled: a payment cannot be recorded on it" in text_of(response)
    assert count(app, Payment) == 0


def test_refund_larger_than_paid_records_nothing(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "technician")
    url = f"/billing/patients/{filled['patient_id']}"
    client.post(url + "/payments", data=pay_form("20.00", "cash", filled["order_id"]))
    response = client.post(url + "/refunds", data=pay_form("20.01", "cash", filled["order_id"]))
    assert response.status_code == 422
    assert "A refund cannot be more than what was paid ($20.00)." in text_of(response)
    assert count(app, Payment) == 1
    assert client.post(url + "/refunds", data=pay_form("20.00", "cash", filled["order_id"])).status_code == 302
    assert count(app, Payment) == 2


def test_receipt_and_statement_pdfs(client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "technician")
    client.post(f"/billing/patients/{filled['patient_id']}/payments", data=pay_form("55.00", "hsa_fsa", filled["order_id"]))
    page = client.get(f"/billing/patients/{filled['patient_id']}/costs").get_data(as_text=True)
    receipt_url = re.search(r'href="(/billing/payments/\d+/receipt\.pdf)"', page).group(1)
    statement_url = re.search(r'href="(/billing/patients/\d+/statements/2026\.pdf)"', page).group(1)
    for url, needle in ((receipt_url, "Amount paid $55.00"), (statement_url, "Net amount paid in 2026 $55.00")):
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "application/pdf"
        assert response.headers["Cache-Control"] == "no-store"
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(response.data)).pages)
        text = re.sub(r"\s+", " ", text)
        assert needle in text and "G35" in text and "Compounded medication" in text and "1234567893" in text


# ---- reports -------------------------------------------------------------------------------------


def _history(app: Flask, clock: FixedClock, filled: dict[str, Any]) -> None:
    """Payments in several months (one a refund month) so the chart has something to draw."""
    from pharmacy.billing import services

    tech = filled["world"]["technician"]
    with app.test_request_context("/"):
        for months_ago, cents in ((11, 4500), (8, 9000), (5, 15500), (3, 5500), (1, 7900), (0, 12345)):
            clock.set(T0 - timedelta(days=30 * months_ago))
            services.record_payment(tech, patient_id=filled["patient_id"], amount_cents=cents, method="card")
        clock.set(T0 - timedelta(days=60))
        services.record_refund(tech, patient_id=filled["patient_id"], amount_cents=1000, method="card")
        clock.set(T0)
        db.session.commit()


def test_money_page_chart_and_csv(app: Flask, client: FlaskClient, filled: dict[str, Any], clock: FixedClock) -> None:
    _history(app, clock, filled)
    as_(client, filled, "pharmacist")
    response = client.get("/billing/reports")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    svg = re.search(r"<svg[^>]*id=\"revenue-chart\".*?</svg>", html, re.S).group(0)
    bars = re.findall(r'<rect class="(bar|bar-negative)"[^>]*data-value="(-?\d+)"', svg)
    assert len(bars) == 12
    assert [int(v) for _, v in bars][-1] == 12345 and ("bar-negative", "-1000") in bars
    assert "Nov 2026: $123.45 net (paid $123.45, refunded $0.00)" in svg
    assert "<script" not in svg and "style=" not in svg  # the CSP allows neither inline script nor inline style
    page = text_of(response)
    assert "Outstanding balances" in page and "Nobody owes anything." in page  # $547.45 paid on a $55.00 fill
    assert "Every current price is inside the band." in page
    csv = client.get("/billing/reports/revenue.csv?months=3")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert "attachment" in csv.headers["Content-Disposition"]
    assert csv.get_data(as_text=True).splitlines()[-1] == "2026-11,123.45,0.00,123.45"
    assert client.get("/billing/reports/nothing.csv").status_code == 404
    assert client.get("/billing/reports?months=99").status_code == 422


def test_csv_downloads_stream_after_the_commit(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    """The big exports stream (a server-side cursor on PostgreSQL) after the request's unit of work committed."""
    with app.test_request_context("/"):
        factories.dispense(filled["world"]["technician"], filled["order_id"])
        db.session.commit()
    as_(client, filled, "pharmacist")
    owed = client.get("/billing/reports/outstanding.csv").get_data(as_text=True).splitlines()
    assert owed == ["patient_id,patient,phone,charged,net_paid,owed",
                    f'{filled["patient_id"]},"Ellison, Margaret",(217) 555-0101,55.00,0.00,55.00']
    average = client.get("/billing/reports/average-monthly-cost.csv").get_data(as_text=True).splitlines()
    assert average[1] == f'{filled["patient_id"]},"Ellison, Margaret",1,55.00,30,55.00'
    adherence = client.get("/billing/reports/adherence.csv?window_days=30").get_data(as_text=True).splitlines()
    assert adherence == ["patient_id,patient,phone,pdc_percent,window_start,last_fill,last_days_supply,product"]


def test_reports_are_not_for_technicians(client: FlaskClient, filled: dict[str, Any]) -> None:
    as_(client, filled, "technician")
    assert client.get("/billing/reports").status_code == 403
    assert client.get("/billing/adherence").status_code == 403


def test_adherence_page_call_list_for_pharmacists_only(app: Flask, client: FlaskClient, filled: dict[str, Any]) -> None:
    with app.test_request_context("/"):
        from pharmacy.compounding.models import Order

        order = db.session.get(Order, filled["order_id"])
        factories.dispense(filled["world"]["technician"], order.id)
        db.session.commit()
    # One 30-day fill today: 100% of the days since it started — nobody to call.
    as_(client, filled, "pharmacist")
    page = text_of(client.get("/billing/adherence?window_days=90"))
    assert 'id="adherence-chart"' in page and 'id="below-count">0' in page and "1 measured" in page
    client.post("/logout")
    as_(client, filled, "admin")
    page = text_of(client.get("/billing/adherence"))
    assert "shown to pharmacists only" in page and "Ellison" not in page


def test_adherence_page_reads_the_snapshot_and_says_when_it_was_computed(app: Flask, client: FlaskClient,
                                                                         filled: dict[str, Any]) -> None:
    with app.test_request_context("/"):
        factories.dispense(filled["world"]["technician"], filled["order_id"])
        db.session.commit()
    as_(client, filled, "pharmacist")
    page = text_of(client.get("/billing/adherence"))
    assert "Not computed yet" in page and "0 measured" in page

    result = app.test_cli_runner().invoke(args=["reports", "refresh-adherence", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "1 patient(s) measured over 180 days up to 2026-11-23 (threshold 80%)" in result.output
    assert "Ellison" not in result.output  # counts only

    page = text_of(client.get("/billing/adherence"))
    assert 'id="computed-at">Computed Nov 23, 2026 9:00 AM' in page and "1 measured" in page
    assert "From May 28, 2026 to Nov 23, 2026" in page
    custom = text_of(client.get("/billing/adherence?window_days=90"))
    assert "Computed now for this window (the nightly figures are for 180 days)" in custom
    assert app.test_cli_runner().invoke(args=["reports", "refresh-adherence", "--batch-size", "0"]).exit_code != 0


# ---- a real browser draws the chart ----------------------------------------------------------------


@pytest.fixture
def live(app: Flask) -> Iterator[LiveServer]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (make test installs Debian's chromium as root)")
    with LiveServer(app) as server:
        yield server


@pytest.mark.browser
def test_revenue_chart_in_a_real_browser(app: Flask, filled: dict[str, Any], clock: FixedClock, live: LiveServer) -> None:
    from playwright.sync_api import sync_playwright

    _history(app, clock, filled)
    with app.test_request_context("/"):  # dispensed, then what the scheduler does every night: a patient to draw
        from pharmacy.billing import adherence

        factories.dispense(filled["world"]["technician"], filled["order_id"])  # it was ready
        db.session.commit()
        assert adherence.refresh_adherence().measured == 1
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            page.set_default_timeout(15_000)
            problems: list[str] = []
            # Console errors (a CSP violation is one), except the favicon the browser asks for on its own.
            page.on("console", lambda m: problems.append(m.text)
                    if m.type == "error" and "favicon" not in (m.location or {}).get("url", "") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{live.url}/login")
            page.get_by_label("Email").fill(filled["staff"]["pharmacist"].email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{live.url}/")
            page.goto(f"{live.url}/billing/reports")
            chart = page.locator("svg#revenue-chart")
            chart.wait_for(state="visible")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 600 and box["height"] > 200
            # The browser laid the bars out in proportion: a larger month is a taller bar ($155.00 the tallest).
            bars = page.eval_on_selector_all(
                "svg#revenue-chart rect", "rs => rs.map(r => [Number(r.dataset.value), r.getBBox().height])")
            assert len(bars) == 12
            positive = sorted((v, h) for v, h in bars if v > 0)
            assert [v for v, _ in positive] == [4500, 5500, 7900, 9000, 12345, 15500]
            assert all(h1 < h2 for (_, h1), (_, h2) in itertools.pairwise(positive))
            assert all(h > 0 for v, h in bars if v != 0)  # the refund month is drawn too (below the zero line)
            fill = page.eval_on_selector("svg#revenue-chart rect.bar", "r => getComputedStyle(r).fill")
            assert fill == "rgb(31, 95, 139)"  # the stylesheet's brand colour reached the SVG (CSP allowed it)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            chart.screenshot(path=str(ARTIFACTS / "billing-revenue-chart.png"))
            page.screenshot(path=str(ARTIFACTS / "billing-money-page.png"), full_page=True)
            page.goto(f"{live.url}/billing/adherence")
            page.locator("svg#adherence-chart").wait_for(state="visible")
            drawn = page.eval_on_selector_all(
                "svg#adherence-chart rect", "rs => rs.map(r => [Number(r.dataset.value), r.getBBox().height])")
            assert len(drawn) == 10 and sum(v for v, _ in drawn) >= 1  # ten 10-point bands, the patient in one
            assert all(h > 0 for v, h in drawn if v > 0)
            page.screenshot(path=str(ARTIFACTS / "billing-adherence-page.png"), full_page=True)
            assert problems == []  # no CSP violation, no script error
        finally:
            browser.close()



def test_the_revenue_axis_has_room_for_a_chains_millions() -> None:
    """$7–8 million a month (a chain's revenue) on the axis: every label fits left of the plot, none starts before
    the chart's edge (72 px, the width for "$400", cut the millions off)."""
    from pharmacy.billing.charts import revenue_chart
    from pharmacy.billing.reports import MonthRevenue

    months = [MonthRevenue(f"2026-{m:02d}", f"M{m}", 700_000_000 + m * 9_000_000, 0) for m in range(1, 13)]
    svg = str(revenue_chart(months))
    labels = re.findall(r'<text x="(\d+)" y="\d+" text-anchor="end">([^<]+)</text>', svg)
    assert any(text == "$10,000,000" for _, text in labels), labels
    for x, text in labels:  # each label ends at x; its characters are at most ~8 px wide at the chart's 13 px
        assert int(x) - 8 * len(text) >= 0, (x, text)
