"""Clinical review (second pass): prescription entry and safety screening as a pharmacist would check them.

Every test here failed when it was written; each docstring says what the pharmacist sees and what is right.
"""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from pharmacy.compounding.models import Order
from pharmacy.compounding.rules import OrderState
from pharmacy.core.errors import Conflict, InvalidTransition
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions import screening
from pharmacy.prescriptions import services as prescriptions
from pharmacy.prescriptions.models import Prescription, ScreeningAlert
from pharmacy.prescriptions.rules import Severity
from pharmacy.workflows import orders as order_flow
from pharmacy.workflows import patient_changes
from pharmacy.workflows import prescription_changes as changes
from tests import factories


def alerts_of(rx_id: int, order_id: int | None = None) -> dict[str, ScreeningAlert]:
    return {a.code: a for a in screening.alerts_for(rx_id, order_id)}


def rx_for(w: dict[str, Any], **patient: Any) -> Prescription:
    """A new patient with these lists and a 4.5 mg capsule prescription, entered by the pharmacist."""
    ph = w["pharmacist"]
    p = factories.patient(ph, first_name="Pat", last_name=f"Clin{db.session.query(Patient).count()}",
                          date_of_birth=w["patient"].date_of_birth, **patient)
    return factories.prescription(ph, p.id, w["formula"].id, w["prescriber"].id)


# ---- opioids the screen does not recognise ------------------------------------------------------------------


@pytest.mark.parametrize("medication", [
    "7-hydroxymitragynine tablets",  # kratom's concentrated alkaloid: docs count kratom/mitragynine as opioids
    "7-OH tablets",                  # the same product as it is sold and written
    "Probuphine implant",            # buprenorphine implant (6 months)
    "Oramorph SR 30 mg",             # morphine
    "OxyIR 5 mg PRN",                # oxycodone immediate release
    "HYDROCOD/APAP 5-325MG TAB",     # the abbreviation printed on dispensing labels, copied from the bottle
    "OXYCOD/APAP 5-325 PRN",
    "Flowtuss cough syrup",          # hydrocodone/guaifenesin cough syrup (docs: cough syrups included)
    "Obredon solution",              # hydrocodone/guaifenesin
])
def test_an_opioid_under_a_name_the_screen_does_not_know_is_a_hard_stop(app_ctx: Flask, staff: dict,
                                                                        medication: str) -> None:
    """The pharmacist enters LDN for a patient whose medication list says e.g. "Probuphine implant" or copies the
    bottle label "HYDROCOD/APAP 5-325MG TAB": no alert at all, so the fill can be verified and the patient is sent
    naltrexone on top of an opioid (precipitated withdrawal, or a blocked analgesic). Right: an opioid hard stop,
    as for "Norco" or "kratom". Cause: prescriptions/screening_rules.OPIOIDS lacks these names and the whole-word
    rule does not see "mitragynine" inside "7-hydroxymitragynine" or "hydrocod"/"oxycod" label abbreviations."""
    w = factories.world(staff)
    rx = rx_for(w, medications=[medication])
    assert "opioid" in alerts_of(rx.id), f"{medication!r} raised no opioid alert"
    assert alerts_of(rx.id)["opioid"].severity == Severity.HARD_STOP


def test_an_opioid_entry_that_mentions_an_allergy_to_another_drug_still_stops(app_ctx: Flask, staff: dict) -> None:
    """Medication entry "Norco 5/325 PRN back pain (allergic to ibuprofen)": the patient takes hydrocodone, but the
    whole entry is skipped as "an allergy" because the words "allergic to" appear anywhere in it, so no stop.
    Right: the allergy words only exclude the drug they are about; Norco is still an opioid the patient takes.
    Cause: screening_rules.screen skips any entry where `_ALLERGY.search(med)` matches."""
    w = factories.world(staff)
    rx = rx_for(w, medications=["Norco 5/325 PRN back pain (allergic to ibuprofen)"])
    assert alerts_of(rx.id).get("opioid") is not None
    assert alerts_of(rx.id)["opioid"].severity == Severity.HARD_STOP


@pytest.mark.parametrize("medication", ["No longer taking oxycodone (last dose yesterday)",
                                        "Not taking tramadol since Monday"])
def test_an_opioid_stopped_days_ago_is_still_a_stop(app_ctx: Flask, staff: dict, medication: str) -> None:
    """docs/domain.md: every opioid entry stops the fill, "including 'stopped tramadol last week'", because recent
    use also brings on withdrawal. "No longer taking oxycodone (last dose yesterday)" says the same thing, yet it is
    read as a negation ("no …") and dropped: no alert. Right: only entries that deny any use ("no opioids",
    "none", "denies …") are skipped. Cause: screening_rules._NEGATION matches any entry starting with "no"/"not"."""
    w = factories.world(staff)
    rx = rx_for(w, medications=[medication])
    assert "opioid" in alerts_of(rx.id)


# ---- naltrexone itself on the medication or allergy list ----------------------------------------------------


@pytest.mark.parametrize("medication", ["Vivitrol 380 mg IM monthly", "naltrexone 50 mg daily", "Contrave 8/90 mg"])
def test_naltrexone_already_on_the_medication_list_is_flagged(app_ctx: Flask, staff: dict, medication: str) -> None:
    """The patient already takes full-dose naltrexone (Vivitrol injection, 50 mg tablets, or Contrave =
    naltrexone/bupropion). LDN is entered and screened clean, so a second naltrexone product is made and sent.
    Right: a stop a pharmacist must clear (therapeutic duplication; a 4.5 mg LDN dose on top of 50 mg or a monthly
    380 mg injection makes no sense). Cause: screening_rules.screen never looks for naltrexone in the medication list;
    the duplicate check (rules.duplicate_alert) only sees this pharmacy's LDN prescriptions."""
    w = factories.world(staff)
    rx = rx_for(w, medications=[medication])
    found = alerts_of(rx.id)
    assert any(a.severity != Severity.WARNING for a in found.values()), (medication, sorted(found))


def test_an_allergy_to_contrave_is_screened_as_a_naltrexone_allergy(app_ctx: Flask, staff: dict) -> None:
    """Allergy list "Contrave - hives": Contrave is naltrexone/bupropion, so the hives may be from naltrexone.
    No alert. Right: the naltrexone-allergy stop (a pharmacist checks it), as for ReVia or Vivitrol.
    Cause: screening_rules.NALTREXONE_ALLERGY_TERMS lacks Contrave."""
    w = factories.world(staff)
    rx = rx_for(w, allergies=["Contrave - hives"])
    assert "naltrexone_allergy" in alerts_of(rx.id)


# ---- liver findings written the other way round -------------------------------------------------------------


@pytest.mark.parametrize("condition", ["LFTs elevated", "liver enzymes elevated", "transaminases elevated",
                                       "elevated transaminases"])
def test_raised_liver_enzymes_written_either_way_stop_the_fill(app_ctx: Flask, staff: dict, condition: str) -> None:
    """docs/domain.md: liver findings include raised liver enzymes. "elevated LFTs" is a stop, but the way problem
    lists usually write it, "LFTs elevated" / "liver enzymes elevated", and "elevated transaminases" give nothing,
    so a patient with active liver injury gets LDN unreviewed. Right: the liver_disease stop. Cause: the LIVER_TERMS
    regex only accepts the adjective before the noun and has no "transaminase" term."""
    w = factories.world(staff)
    rx = rx_for(w, conditions=["multiple sclerosis", condition])
    assert "liver_disease" in alerts_of(rx.id)


# ---- an override that silently covers a new, different finding ---------------------------------------------


def test_a_new_naltrexone_allergy_reopens_an_override_given_for_an_intolerance(app_ctx: Flask, staff: dict) -> None:
    """The pharmacist overrode "Naltrexone - nausea" ("was nausea on 50 mg tablets, not an allergy"). Later the
    allergy list gains "Vivitrol - anaphylaxis". The alert's message now names the anaphylaxis, yet it stays
    resolved under the old reason and the open order can be verified and dispensed. Right: a finding the override
    did not cover (a new entry) needs a new decision. Cause: prescriptions/screening._sync keeps the override
    whenever the code and severity are unchanged, whatever the entries behind it."""
    w = factories.world(staff)
    rx = rx_for(w, allergies=["Naltrexone - nausea"])
    alert = alerts_of(rx.id)["naltrexone_allergy"]
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "Was nausea on 50 mg tablets, not an allergy")
    order = order_flow.start_fill(w["technician"], rx.id)
    assert alerts_of(rx.id, order.id)["naltrexone_allergy"].resolved_at is not None
    patient_changes.update(w["technician"], rx.patient_id,
                           {"allergies": ["Naltrexone - nausea", "Vivitrol - anaphylaxis"]})
    now_rx = alerts_of(rx.id)["naltrexone_allergy"]
    now_order = alerts_of(rx.id, order.id)["naltrexone_allergy"]
    assert "anaphylaxis" in now_rx.message
    assert now_rx.resolved_at is None and now_order.resolved_at is None


def test_cirrhosis_added_after_a_hepatitis_override_needs_a_new_review(app_ctx: Flask, staff: dict) -> None:
    """Overridden for "hepatitis C, cured 2019" (reason: "SVR confirmed, LFTs normal"). Later "cirrhosis" is added to
    the conditions: the liver alert now names cirrhosis but stays resolved under the old reason. Right: the
    pharmacist must review the new liver finding. Cause: screening._sync (override kept while severity is
    unchanged)."""
    w = factories.world(staff)
    rx = rx_for(w, conditions=["multiple sclerosis", "hepatitis C, cured 2019"])
    alert = alerts_of(rx.id)["liver_disease"]
    prescriptions.resolve_alert(w["pharmacist"], alert.id, "SVR confirmed, LFTs normal")
    patient_changes.update(w["technician"], rx.patient_id,
                           {"conditions": ["multiple sclerosis", "hepatitis C, cured 2019", "cirrhosis"]})
    now_rx = alerts_of(rx.id)["liver_disease"]
    assert "cirrhosis" in now_rx.message
    assert now_rx.resolved_at is None


# ---- a prescription on hold --------------------------------------------------------------------------------


def test_an_order_of_a_prescription_on_hold_cannot_be_dispensed(app: Flask, staff: dict) -> None:
    """The prescriber calls: "hold the LDN, she has surgery Friday and will be on opioids". The pharmacist puts the
    prescription on hold. Its order, already made and released, is still handed over or shipped: dispensing never
    looks at the prescription's status (verification does). Right: while the prescription is on hold its orders
    do not go out (docs: "Putting a prescription on hold stops its reminders and new fills"); resume first.
    Cause: compounding/dispensing.dispense_order checks expiry and alerts, not RxStatus."""
    with app.test_request_context():
        w, order_id = factories.world_with_order(staff, "ready")
        changes.hold(w["pharmacist"], w["rx"].id, "Surgery Friday, opioids after: prescriber says hold")
        with pytest.raises((Conflict, InvalidTransition)):
            factories.dispense(w["technician"], order_id)
        assert db.session.get(Order, order_id).state != OrderState.DISPENSED
