"""Clinical review of the pure screening and dose rules (docs/domain.md "Dosing", "Safety screening").

Each case here failed before the fix it names: an opioid written without a space before its strength was missed,
a 6 mg LDN order (a dose some MS prescribers use) could never be filled, an allergy to naltrexone itself was never
looked at, and a child got no alert.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from pharmacy.prescriptions import rules, screening_rules
from pharmacy.prescriptions.rules import Severity


def _codes(**kw: object) -> dict[str, Severity]:
    kw.setdefault("medications", [])
    kw.setdefault("conditions", [])
    kw.setdefault("max_dose_mg", Decimal("4.5"))
    return {a.code: a.severity for a in screening_rules.screen(**kw)}  # type: ignore[arg-type]


# ---- opioids typed without a space before the strength -------------------------------------------------------


@pytest.mark.parametrize("med", ["tramadol50mg", "oxycodone5mg", "Percocet10/325", "Norco10-325", "codeine30mg",
                                 "methadone10mg", "buprenorphine2mg", "Butrans5mcg/hr", "morphine15mg"])
def test_an_opioid_with_its_strength_run_on_is_still_a_hard_stop(med: str) -> None:
    assert _codes(medications=[med]) == {"opioid": Severity.HARD_STOP}


@pytest.mark.parametrize("med", ["loperamide2mg", "naloxone4mg", "apomorphine2mg", "dextromethorphan30mg"])
def test_run_on_strengths_do_not_turn_non_opioids_into_opioids(med: str) -> None:
    assert "opioid" not in _codes(medications=[med])


def test_interferon_beta_with_its_strength_run_on_still_warns() -> None:
    assert _codes(medications=["Avonex30mcg"]) == {"interferon_beta": Severity.WARNING}


@pytest.mark.parametrize("cond", ["cirrhotic liver", "ESLD"])
def test_more_ways_of_writing_liver_disease_are_a_liver_stop(cond: str) -> None:
    assert _codes(conditions=[cond]) == {"liver_disease": Severity.OVERRIDABLE_STOP}


# ---- above 5 mg: a pharmacist's attention; far above: not LDN ------------------------------------------------


@pytest.mark.parametrize("dose", ["5.5", "6"])
def test_a_dose_above_5_up_to_6_mg_is_a_stop_a_pharmacist_may_override(dose: str) -> None:
    alerts = rules.check_dose(Decimal(dose), has_spasticity=False)
    assert [(a.code, a.severity) for a in alerts] == [("dose_not_low_dose", Severity.OVERRIDABLE_STOP)]
    assert rules.can_override(alerts[0].severity)
    assert rules.blocking_alerts([(alerts[0], False)]) == alerts  # blocks until resolved
    assert rules.blocking_alerts([(alerts[0], True)]) == []


@pytest.mark.parametrize("dose", ["6.5", "9", "50"])
def test_a_dose_above_6_mg_stays_a_hard_stop(dose: str) -> None:
    alerts = rules.check_dose(Decimal(dose), has_spasticity=False)
    assert [(a.code, a.severity) for a in alerts] == [("dose_not_low_dose", Severity.HARD_STOP)]


def test_5_mg_is_still_only_a_warning() -> None:
    alerts = rules.check_dose(Decimal("5"), has_spasticity=False)
    assert [(a.code, a.severity) for a in alerts] == [("dose_outside_usual_range", Severity.WARNING)]


# ---- allergy to naltrexone --------------------------------------------------------------------------------------


@pytest.mark.parametrize("allergy", ["naltrexone", "Naltrexone (hives)", "naltrexone hydrochloride - rash",
                                     "Vivitrol", "ReVia", "LDN"])
def test_an_allergy_to_naltrexone_is_a_stop_a_pharmacist_must_review(allergy: str) -> None:
    assert _codes(allergies=[allergy]) == {"naltrexone_allergy": Severity.OVERRIDABLE_STOP}


@pytest.mark.parametrize("allergy", ["penicillin", "NKDA", "no known drug allergies", "none", "sulfa", "naloxone"])
def test_other_allergies_and_none_give_no_naltrexone_alert(allergy: str) -> None:
    assert "naltrexone_allergy" not in _codes(allergies=[allergy])


def test_screen_still_works_without_an_allergy_list() -> None:
    assert _codes() == {}


# ---- age -------------------------------------------------------------------------------------------------------


def test_a_patient_under_18_gets_a_warning() -> None:
    alert = rules.age_alert(date(2010, 6, 1), date(2026, 5, 31))
    assert alert is not None and alert.code == "age_under_18" and alert.severity is Severity.WARNING
    assert not alert.blocks


@pytest.mark.parametrize(("born", "day"), [(date(2008, 6, 1), date(2026, 6, 1)), (date(1968, 4, 12), date(2026, 1, 1)),
                                           (date(2008, 2, 29), date(2026, 3, 1))])
def test_an_adult_gets_no_age_alert(born: date, day: date) -> None:
    assert rules.age_alert(born, day) is None


def test_a_duplicate_names_each_current_prescription_and_the_total_a_day() -> None:
    from pharmacy.prescriptions.rules import OtherPrescription, duplicate_alert

    assert duplicate_alert(Decimal("4.5"), []) is None
    alert = duplicate_alert(Decimal("1.5"), [OtherPrescription("RX000007", "Naltrexone 4.5 mg capsules", Decimal("4.5")),
                                             OtherPrescription("RX000009", "Naltrexone 1 mg/mL cream", Decimal("0.5"))])
    assert alert is not None and alert.code == "duplicate_ldn" and alert.severity == Severity.OVERRIDABLE_STOP
    assert alert.needs_pharmacist and alert.blocks
    assert "RX000007 (Naltrexone 4.5 mg capsules, 4.5 mg); RX000009" in alert.message
    assert "6.5 mg a day" in alert.message


def test_a_duplicate_message_fits_its_column_however_many_there_are() -> None:
    from pharmacy.prescriptions.rules import Form, OtherPrescription, duplicate_alert, product_name

    longest = product_name(Form.TRANSDERMAL_CREAM, Decimal("12.5"))
    others = [OtherPrescription(f"RX{i:06d}", longest, Decimal("4.5")) for i in range(1, 7)]
    alert = duplicate_alert(Decimal("4.5"), others)
    assert alert is not None and len(alert.message) <= 400  # screening_alerts.message is VARCHAR(400)
    assert "RX000001" in alert.message and "RX000002" in alert.message and "and 4 more" in alert.message
    assert "31.5 mg a day" in alert.message


def test_a_duplicate_beside_an_expired_one_reads_as_its_renewal_and_counts_only_current_doses() -> None:
    from datetime import date

    from pharmacy.prescriptions.rules import OtherPrescription, duplicate_alert

    expired = OtherPrescription("RX000007", "Naltrexone 4.5 mg capsules", Decimal("4.5"), date(2026, 11, 1))
    alone = duplicate_alert(Decimal("3"), [expired])
    assert alone is not None and alone.blocks
    assert "expired Nov 1, 2026" in alone.message and "most likely its renewal" in alone.message
    both = duplicate_alert(Decimal("3"), [expired, OtherPrescription("RX000009", "Naltrexone 1 mg/g cream", Decimal("1"))])
    assert both is not None and "Taken together that is 4 mg a day" in both.message  # 3 + 1: the expired one not counted


@pytest.mark.parametrize(("medications", "codes"), [
    (["LDN 4.5 mg nightly"], set()),                      # the patient's own LDN on their list
    (["low dose naltrexone 3 mg"], set()),
    (["naltrexone 1.5 mg at bedtime"], set()),
    (["naltrexone 50 mg daily"], {"naltrexone_taken"}),
    (["Vivitrol 380 mg IM monthly"], {"naltrexone_taken"}),
    (["Allergy: morphine"], set()),                       # an allergy as a whole names no medicine taken
    (["codeine (allergy)"], set()),
    (["morphine allergy"], set()),
    (["Norco 5/325 PRN (allergic to ibuprofen)"], {"opioid"}),
    (["no opioids"], set()),
    (["None"], set()),
    (["No longer taking oxycodone (last dose yesterday)"], {"opioid"}),
])
def test_what_the_medication_list_screen_reads(medications: list[str], codes: set[str]) -> None:
    from pharmacy.prescriptions.screening_rules import screen

    found = {a.code for a in screen(medications=medications, conditions=[], max_dose_mg=Decimal("4.5"))}
    assert found & {"opioid", "naltrexone_taken"} == codes
