"""Every staff page and the patient's refill-link pages, rendered with realistic data (the demo seeds: hard stops,
titrations, people out of medicine, balances, renewals, emails), must read as a person reads: no Python repr
(`AdherenceRow(`, `Decimal(`, `datetime.date(`, `None` …), no ISO dates beside "Dec 2, 2026", and exactly one
menu item marked current on a page that belongs to the menu (none on search).

issue 17 item 1 printed `AdherenceRow(patient_id=13, pdc=Decimal('0.1278'), …)` on the Today page; this test renders
every card with data, so it would have caught it. A self-test proves the check can fail.
"""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from pharmacy.billing.adherence import refresh_adherence
from pharmacy.billing.models import Payment
from pharmacy.compounding.models import Formula, IngredientLot, Order
from pharmacy.core import links
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescription
from pharmacy.refills.models import RenewalRequest
from pharmacy.reminders.models import OutboxMessage
from tests.conftest import login
from tests.demo_seeds import load_demo_seeds
from tests.pages import confirm_birth_date, run, words

# What a template leaks when it prints an object instead of its words.
REPR = re.compile(
    r"\b(?:[A-Z][A-Za-z]+Row|Row|Decimal|datetime\.date|datetime\.datetime|date|Markup|Enum|OrderState|RxStatus|"
    r"Severity|PaymentKind|PaymentMethod|DeliveryMethod|OutboxState|MessageKind|RequestSource|[A-Z][a-z]+View|"
    r"[A-Z][a-z]+(?:Page|Line|Record|Summary|Info))\(|<[a-z_.]+ object at 0x|"
    # None/True/False printed for a value ("Phone: None", "None days"), not the English word ("None recorded.").
    r"(?:[:=·($]\s*|\bby |\bon )(?:None|True|False)\b|\b(?:None|True|False)(?=\s*(?:days|mg|%|·|\)|,|\$))|"
    r"\{'|\['|&lt;[A-Z][a-z]+\.[A-Z_]+: ")
ISO_DATE = re.compile(r"(?<![\w/-])(?:19|20|21)\d\d-\d\d-\d\d(?![\w-])")


def problems_in(html: str) -> list[str]:
    """What in the page a person would not understand: repr-like output and ISO dates in the visible text."""
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    # Form values, hints showing the format to type ("e.g. 1968-04-12") and the CSV export links are not prose.
    visible = words(re.sub(r'<input[^>]*>|<option[^>]*>[^<]*</option>|<a [^>]*href="[^"]*\.csv[^"]*"[^>]*>', " ", body))
    visible = re.sub(r"e\.g\. [\d-]+|like [\d-]+|For example:[^.]*\.|“[^”]*”", " ", visible)  # formats; what was typed
    found = [f"repr: …{visible[max(m.start() - 40, 0):m.end() + 40]}…" for m in REPR.finditer(visible)]
    found += [f"ISO date: …{visible[max(m.start() - 40, 0):m.end() + 20]}…" for m in ISO_DATE.finditer(visible)]
    return found


def current_items(html: str) -> list[str]:
    nav = html.split('<nav aria-label="Main">', 1)[-1].split("</nav>", 1)[0] if 'aria-label="Main"' in html else ""
    return re.findall(r'aria-current="page">([^<]+)<', nav)


def test_the_checks_can_fail() -> None:
    assert problems_in("<main><li>AdherenceRow(patient_id=13, pdc=Decimal('0.1278'))</li></main>")
    assert problems_in("<p>last filled datetime.date(2026, 11, 14)</p>")
    assert problems_in("<p>Phone: None</p>")
    assert problems_in("<p>Born 1968-04-12</p>")
    assert not problems_in('<p>Born Apr 12, 1968</p><input value="1968-04-12"><p class="hint">e.g. 1968-04-12</p>')
    assert current_items('<nav aria-label="Main"><a aria-current="page">Audit</a><a aria-current="page">Users</a></nav>') \
        == ["Audit", "Users"]


@pytest.fixture
def seeded(app: Flask, staff: dict) -> dict:
    """The demo seeds loaded through the real services, a payment and the adherence snapshot; plain ids."""
    run(app, load_demo_seeds)
    with app.app_context():
        refresh_adherence()
        db.session.commit()

        def ids(model: type, *where: object) -> list[int]:
            return list(db.session.execute(sa.select(model.id).where(*where).order_by(model.id)).scalars())

        patients = ids(Patient)
        rx = db.session.execute(sa.select(Prescription.id, Prescription.patient_id).order_by(Prescription.id)).all()
        whitaker = db.session.execute(sa.select(Prescription).join(Patient).where(Patient.last_name == "Whitaker")
                                      ).scalars().first()
        return {
            "patients": patients, "rx": [r[0] for r in rx], "orders": ids(Order),
            "compounded": ids(Order, Order.compounded_at.is_not(None)), "renewals": ids(RenewalRequest),
            "outbox": ids(OutboxMessage)[:12], "formulas": ids(Formula), "lots": ids(IngredientLot)[:1],
            "payments": ids(Payment)[:3],
            "link": links.make_token(links.REFILL, whitaker.patient_id, whitaker.id),
            "link_dob": whitaker.patient.date_of_birth,
        }


def staff_pages(s: dict) -> list[str]:
    pages = ["/", "/patients/", "/patients/new", "/orders", "/refills", "/refills/renewals", "/outbox", "/billing/reports",
             "/billing/adherence", "/billing/prices", "/billing/quote", "/formulas", "/lots", "/recall",
             "/recall?ingredient_lot=NTX-24117", "/prescribers", "/eprescriptions", "/documents/upload",
             "/search?q=whitaker+james", "/search?q=(217)+555-0202", "/search?q=RX000005", "/search?q=NTX-24117",
             "/search?q=1975-09-30", "/admin/tokens"]
    pages += [f"/patients/{p}" for p in s["patients"]]
    pages += [f"/billing/patients/{p}/costs" for p in s["patients"]]
    pages += [f"/prescriptions/{r}" for r in s["rx"]]
    pages += [f"/prescriptions/new?patient_id={p}" for p in s["patients"][:3]]
    pages += [f"/prescriptions/{r}/replace" for r in s["rx"][:2]]
    pages += [f"/orders/{o}" for o in s["orders"]]
    pages += [f"/orders/{o}/record" for o in s["compounded"]]
    pages += [f"/renewals/{r}" for r in s["renewals"]]
    pages += [f"/outbox/{m}" for m in s["outbox"]]
    pages += [f"/formulas/{f}" for f in s["formulas"]]
    return pages


def test_every_staff_page_reads_as_words_with_one_current_menu_item(app: Flask, client: FlaskClient, staff: dict,
                                                                     seeded: dict) -> None:
    login(client, staff["pharmacist"])
    found: dict[str, list[str]] = {}
    seen = 0
    for url in staff_pages(seeded):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        html = response.get_data(as_text=True)
        issues = problems_in(html)
        current = current_items(html)
        if url.startswith("/search"):
            if current:
                issues.append(f"search marks {current} as current")
        elif len(current) != 1:
            issues.append(f"menu items marked current: {current}")
        if issues:
            found[url] = issues
        seen += 1
    assert seen > 90
    assert not found, "\n".join(f"{url}: {issues[:3]}" for url, issues in found.items())


def test_admin_and_technician_pages_read_as_words(app: Flask, client: FlaskClient, staff: dict, seeded: dict) -> None:
    found: dict[str, list[str]] = {}
    login(client, staff["admin"])
    for url in ["/", "/admin/audit", "/admin/audit?action=patient.", f"/admin/audit?user_id={staff['pharmacist'].id}",
                "/admin/users", "/admin/tokens", "/billing/reports", "/billing/prices", "/billing/adherence", "/outbox",
                *[f"/outbox/{m}" for m in seeded["outbox"][:4]]]:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.get_data(as_text=True)
        issues = problems_in(html) + ([f"current: {current_items(html)}"] if len(current_items(html)) != 1 else [])
        if issues:
            found[url] = issues
    client.post("/logout")
    login(client, staff["technician"])
    for url in ["/", "/orders", "/refills", *[f"/orders/{o}" for o in seeded["orders"][:6]],
                *[f"/patients/{p}" for p in seeded["patients"][:4]]]:
        response = client.get(url)
        assert response.status_code == 200, url
        if problems_in(response.get_data(as_text=True)):
            found[url] = problems_in(response.get_data(as_text=True))
    assert not found, "\n".join(f"{url}: {issues[:3]}" for url, issues in found.items())


def test_the_audit_trail_is_in_the_pharmacy_time_zone(app: Flask, client: FlaskClient, staff: dict, seeded: dict) -> None:
    login(client, staff["admin"])
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "When (America/Chicago)" in page and "(UTC)" not in page
    # The test clock is 09:00 in Chicago (15:00 UTC): the events of this morning read 9:00, not 15:00.
    assert re.search(r"Nov 23, 2026 9:0\d:\d\d AM", page), words(page)[:800]
    assert ">Paula Pharmacist</option>" in page  # staff chosen by name, not a numeric id


def test_the_patient_link_pages_read_as_words(app: Flask, client: FlaskClient, seeded: dict) -> None:
    token = seeded["link"]
    first = client.get(f"/r/{token}")
    assert first.status_code == 200 and not problems_in(first.get_data(as_text=True))
    confirmed = confirm_birth_date(client, token, seeded["link_dob"])
    assert confirmed.status_code == 303
    page = client.get(f"/r/{token}/refill")
    assert page.status_code == 200
    assert not problems_in(page.get_data(as_text=True)), problems_in(page.get_data(as_text=True))
