"""Prescription rules: ISMP text, units, dose checks, screening, titration and supply arithmetic."""
from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pharmacy.core.errors import ValidationFailed
from pharmacy.prescriptions import rules as r
from pharmacy.prescriptions import screening_rules
from pharmacy.prescriptions.rules import (
    Alert,
    DoseError,
    DosingTime,
    Form,
    Severity,
    SupplyError,
    TitrationStep,
)

CAP, SL, CREAM = Form.CAPSULE, Form.SUBLINGUAL_LIQUID, Form.TRANSDERMAL_CREAM


# ---------------------------------------------------------------- enums stay as the models expect
def test_enum_values_are_stable() -> None:
    assert [f.value for f in Form] == ["capsule", "sublingual_liquid", "transdermal_cream"]
    assert [s.value for s in r.RxStatus] == ["active", "on_hold", "discontinued", "replaced"]
    assert [t.value for t in DosingTime] == ["bedtime", "morning"]
    assert [s.value for s in Severity] == ["hard_stop", "overridable_stop", "acknowledge", "warning"]


# ---------------------------------------------------------------- ISMP text
@pytest.mark.parametrize(
    ("value", "text"),
    [(D("4.50"), "4.5"), (D("3.0"), "3"), (D("3"), "3"), (D(".5"), "0.5"), (D("0.50"), "0.5"),
     (D("10"), "10"), (D("1E+1"), "10"), (D("100.000"), "100"), (D("0.125"), "0.125"), (D("0"), "0"),
     (D("-0.0"), "0"), (D("-1.50"), "-1.5"), (4, "4"), ("1.50", "1.5")],
)
def test_format_amount(value, text) -> None:
    assert r.format_amount(value) == text


def test_format_amount_refuses_floats_and_nonsense() -> None:
    with pytest.raises(TypeError):
        r.format_amount(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        r.format_amount("abc")
    with pytest.raises(ValidationFailed):
        r.format_amount(D("NaN"))


@given(st.decimals(min_value=D("-100000"), max_value=D("100000"), places=4, allow_nan=False, allow_infinity=False))
def test_format_amount_is_ismp_safe_and_round_trips(value: D) -> None:
    text = r.format_amount(value)
    assert D(text) == value
    assert "E" not in text.upper()
    assert not text.startswith(".") and not text.startswith("-.")
    if "." in text:
        assert not text.endswith("0") and not text.endswith(".")
    if value != 0 and abs(value) < 1:
        assert text.lstrip("-").startswith("0.")
    if value == value.to_integral_value():
        assert "." not in text


def test_units_and_names() -> None:
    assert r.format_mg(D("4.50")) == "4.5 mg"
    assert r.format_mg(D("0.5")) == "0.5 mg"
    assert r.format_mg(D("3.0")) == "3 mg"
    assert r.format_ml(D("1.50")) == "1.5 mL"
    assert r.dose_unit(CAP) == "capsule"
    assert r.dose_unit(SL) == "mL"
    assert r.dose_unit(CREAM) == "mL"
    assert r.dose_unit("capsule") == "capsule"  # type: ignore[arg-type]
    assert r.strength_text(CAP, D("4.5")) == "4.5 mg"
    assert r.strength_text(SL, D("1.0")) == "1 mg/mL"
    assert r.product_name(CAP, D("4.50")) == "Naltrexone 4.5 mg capsules"
    assert r.product_name(SL, D("1")) == "Naltrexone 1 mg/mL sublingual liquid"
    assert r.product_name(CREAM, D("0.5")) == "Naltrexone 0.5 mg/mL transdermal cream"
    assert r.quantity_text(CAP, D("30")) == "30 capsules"
    assert r.quantity_text(CAP, D("1")) == "1 capsule"
    assert r.quantity_text(CAP, D("1.000")) == "1 capsule"
    assert r.quantity_text(SL, D("45.0")) == "45 mL"
    assert r.quantity_text(CREAM, D("0.5")) == "0.5 mL"
    assert "cc" not in r.format_ml(D("2"))


# ---------------------------------------------------------------- units per dose
@pytest.mark.parametrize(
    ("form", "strength", "dose", "units"),
    [(CAP, "1.5", "4.5", "3"), (CAP, "4.5", "4.5", "1"), (CAP, "0.5", "3", "6"), (CAP, "1.5", "1.5", "1"),
     (SL, "1", "1.5", "1.5"), (SL, "1", "4.5", "4.5"), (SL, "0.5", "0.5", "1"), (CREAM, "0.5", "1", "2"),
     (CREAM, "1", "0.1", "0.1"), (SL, "0.25", "5", "20")],
)
def test_units_per_dose(form, strength, dose, units) -> None:
    got = r.units_per_dose(form, D(strength), D(dose))
    assert got == D(units)
    assert str(got) == units  # canonical: no "3.0", no "1E+1"


def test_capsule_dose_must_be_whole_capsules() -> None:
    with pytest.raises(DoseError) as err:
        r.units_per_dose(CAP, D("1.5"), D("4"))
    assert err.value.message == "4 mg is not a whole number of 1.5 mg capsules."
    assert "dose_mg" in err.value.fields
    assert err.value.status == 422


def test_capsule_count_is_limited() -> None:
    with pytest.raises(DoseError, match=r"9 capsules of 0\.5 mg"):
        r.units_per_dose(CAP, D("0.5"), D("4.5"))


@pytest.mark.parametrize(
    ("form", "strength", "dose", "fragment"),
    [(SL, "3", "1", "0.333 mL"), (SL, "1", "0.05", "0.05 mL"), (CREAM, "0.5", "25", "50 mL"),
     (SL, "10", "0.5", "0.05 mL")],
)
def test_liquid_volume_must_be_measurable(form, strength, dose, fragment) -> None:
    with pytest.raises(DoseError) as err:
        r.units_per_dose(form, D(strength), D(dose))
    assert fragment in err.value.message
    assert list(err.value.fields) == ["dose_mg"]


@pytest.mark.parametrize(("strength", "dose", "field"), [("0", "1", "strength_mg"), ("1", "0", "dose_mg"),
                                                          ("1", "-1", "dose_mg"), ("-1", "1", "strength_mg")])
def test_units_per_dose_needs_positive_numbers(strength, dose, field) -> None:
    with pytest.raises(DoseError) as err:
        r.units_per_dose(CAP, D(strength), D(dose))
    assert field in err.value.fields


# ---------------------------------------------------------------- alerts and dose checks
def test_alert_flags() -> None:
    hard = Alert("x", Severity.HARD_STOP, "m")
    over = Alert("x", Severity.OVERRIDABLE_STOP, "m")
    ack = Alert("x", Severity.ACKNOWLEDGE, "m")
    warn = Alert("x", Severity.WARNING, "m")
    assert [a.needs_pharmacist for a in (hard, over, ack, warn)] == [False, True, True, False]
    assert [a.blocks for a in (hard, over, ack, warn)] == [True, True, True, False]
    assert [r.can_override(a.severity) for a in (hard, over, ack, warn)] == [False, True, True, False]
    with pytest.raises(AttributeError):
        hard.code = "y"  # type: ignore[misc]


def test_blocking_alerts() -> None:
    hard = Alert("opioid", Severity.HARD_STOP, "h")
    over = Alert("liver_disease", Severity.OVERRIDABLE_STOP, "o")
    ack = Alert("spasticity_dose", Severity.ACKNOWLEDGE, "a")
    warn = Alert("interferon_beta", Severity.WARNING, "w")
    assert r.blocking_alerts([(hard, False), (over, False), (ack, False), (warn, False)]) == [hard, over, ack]
    # A hard stop blocks even when (wrongly) marked resolved; resolved stops and acks stop blocking.
    assert r.blocking_alerts([(hard, True), (over, True), (ack, True), (warn, True)]) == [hard]
    assert r.blocking_alerts([(warn, False)]) == []
    assert r.blocking_alerts([]) == []


@pytest.mark.parametrize(
    ("dose", "spastic", "codes"),
    [("4.5", False, []), ("1.5", False, []), ("3", True, []), ("2.5", False, []),
     ("0.5", False, ["dose_outside_usual_range"]), ("1", False, ["dose_outside_usual_range"]),
     ("4.75", False, ["dose_outside_usual_range"]), ("5", False, ["dose_outside_usual_range"]),
     ("5.01", False, ["dose_not_low_dose"]), ("50", False, ["dose_not_low_dose"]),
     ("4.5", True, ["spasticity_dose"]), ("3.5", True, ["spasticity_dose"]),
     ("5", True, ["dose_outside_usual_range", "spasticity_dose"]),
     ("6", True, ["dose_not_low_dose", "spasticity_dose"])],
)
def test_check_dose(dose, spastic, codes) -> None:
    alerts = r.check_dose(D(dose), has_spasticity=spastic)
    assert [a.code for a in alerts] == codes
    severities = {a.code: a.severity for a in alerts}
    if "dose_not_low_dose" in severities:
        # docs/domain.md "Dosing": 5–6 mg is a pharmacist's call (some prescribers use 6 mg); above 6 mg a hard stop.
        expected = Severity.HARD_STOP if D(dose) > 6 else Severity.OVERRIDABLE_STOP
        assert severities["dose_not_low_dose"] is expected
    if "dose_outside_usual_range" in severities:
        assert severities["dose_outside_usual_range"] is Severity.WARNING
    if "spasticity_dose" in severities:
        assert severities["spasticity_dose"] is Severity.ACKNOWLEDGE


def test_check_dose_messages_are_ismp_safe() -> None:
    (alert,) = r.check_dose(D("4.50"), has_spasticity=True)
    assert "4.5 mg" in alert.message and "4.50" not in alert.message
    assert "3 mg" in alert.message and "3.0" not in alert.message
    (alert,) = r.check_dose(D("0.50"), has_spasticity=False)
    assert alert.message.startswith("0.5 mg is outside the usual MS range of 1.5–4.5 mg")


@pytest.mark.parametrize("dose", ["0", "-1"])
def test_check_dose_refuses_nonpositive(dose) -> None:
    with pytest.raises(DoseError) as err:
        r.check_dose(D(dose), has_spasticity=False)
    assert "dose_mg" in err.value.fields


# ---------------------------------------------------------------- screening
def _screen(meds=(), conds=(), dose="4.5", **kw) -> list[Alert]:
    return screening_rules.screen(medications=list(meds), conditions=list(conds), max_dose_mg=D(dose), **kw)


def _codes(alerts: list[Alert]) -> list[str]:
    return [a.code for a in alerts]


@pytest.mark.parametrize(
    ("entry", "generic"),
    [("Percocet 5/325 mg", "oxycodone"), ("OXYCONTIN ER", "oxycodone"), ("oxycodone HCl 5 mg", "oxycodone"),
     ("oxycodone/acetaminophen", "oxycodone"), ("Roxicodone", "oxycodone"), ("Xtampza ER", "oxycodone"),
     ("Endocet", "oxycodone"), ("Vicodin", "hydrocodone"), ("Norco 10-325", "hydrocodone"),
     ("hydrocodone-acetaminophen", "hydrocodone"), ("Lortab", "hydrocodone"), ("Hysingla ER", "hydrocodone"),
     ("Zohydro", "hydrocodone"), ("tramadol 50 mg", "tramadol"), ("Ultram", "tramadol"), ("Ultracet", "tramadol"),
     ("ConZip", "tramadol"), ("Tylenol with codeine #3", "codeine"), ("Tylenol #3", "codeine"),
     ("Tylenol #4", "codeine"), ("Tylenol No. 3", "codeine"), ("Tylenol 3", "codeine"), ("tylenol#4", "codeine"),
     ("codeine cough syrup", "codeine"), ("Tuzistra XR", "codeine"), ("Robitussin AC", "codeine"),
     ("Cheratussin AC", "codeine"), ("Robitussin DAC", "codeine"), ("guaifenesin AC syrup", "codeine"),
     ("promethazine with codeine", "codeine"), ("morphine sulfate ER", "morphine"), ("MS Contin", "morphine"),
     ("Kadian", "morphine"), ("fentanyl patch", "fentanyl"), ("Duragesic 25 mcg/h", "fentanyl"),
     ("Actiq", "fentanyl"), ("Fentora", "fentanyl"), ("Dilaudid", "hydromorphone"), ("Exalgo", "hydromorphone"),
     ("hydromorphone", "hydromorphone"), ("Opana ER", "oxymorphone"), ("methadone 10 mg", "methadone"),
     ("Dolophine", "methadone"), ("Methadose", "methadone"), ("Suboxone film", "buprenorphine"),
     ("Subutex", "buprenorphine"), ("Butrans patch", "buprenorphine"), ("Belbuca", "buprenorphine"),
     ("Zubsolv", "buprenorphine"), ("Sublocade", "buprenorphine"), ("Nucynta ER", "tapentadol"),
     ("Demerol", "meperidine"), ("levorphanol", "levorphanol"), ("butorphanol nasal spray", "butorphanol"),
     ("pentazocine", "pentazocine"), ("nalbuphine", "nalbuphine"), ("dihydrocodeine", "dihydrocodeine"),
     ("Lomotil", "diphenoxylate"), ("diphenoxylate/atropine", "diphenoxylate"), ("kratom", "kratom"),
     ("opium tincture", "opium"), ("Percocets", "oxycodone")],
)
def test_every_opioid_is_a_hard_stop_naming_the_entry(entry, generic) -> None:
    assert generic in screening_rules.opioids_in(entry)
    alerts = _screen([entry])
    assert _codes(alerts) == ["opioid"]
    assert alerts[0].severity is Severity.HARD_STOP
    assert f'"{entry}"' in alerts[0].message
    assert generic in alerts[0].message
    assert "withdrawal" in alerts[0].message


@pytest.mark.parametrize(
    "entry",
    ["Imodium", "loperamide 2 mg", "Viberzi", "dextromethorphan", "Robitussin DM", "Tylenol 325 mg",
     "Tylenol Extra Strength", "Tylenol 3 times a day", "apomorphine", "naloxone (Narcan)", "naltrexone 4.5 mg",
     "naltrexone (opioid antagonist)", "methylnaltrexone", "Movantik", "Copaxone", "Glatopa", "glatiramer acetate",
     "gabapentin", "baclofen", "Ocrevus", "vitamin D", "morphine allergy", "allergic to codeine",
     "Allergy: oxycodone", "codeine (allergy)", "codeine intolerance", "no opioids", "None", "MS", "Contin"],
)
def test_not_opioids(entry) -> None:
    assert "opioid" not in _codes(_screen([entry]))


def test_hyphen_is_a_word_boundary() -> None:
    assert screening_rules.opioids_in("Tussionex") == ["hydrocodone"]
    assert screening_rules.opioids_in("APAP-hydrocodone") == ["hydrocodone"]
    assert screening_rules.opioids_in("oxycodone/APAP") == ["oxycodone"]


def test_stopped_opioids_still_stop() -> None:
    alerts = _screen(["stopped tramadol last week"])
    assert _codes(alerts) == ["opioid"]


def test_each_opioid_entry_gets_its_own_alert_sorted() -> None:
    alerts = _screen(["Vicodin", "baclofen", "OxyContin", "vicodin"])  # duplicate (case) dropped
    assert _codes(alerts) == ["opioid", "opioid"]
    assert '"OxyContin"' in alerts[0].message
    assert '"Vicodin"' in alerts[1].message


def test_combination_names_every_opioid() -> None:
    assert screening_rules.opioids_in("Suboxone plus oxycodone") == ["buprenorphine", "oxycodone"]
    (alert,) = _screen(["Suboxone plus oxycodone"])
    assert "buprenorphine and oxycodone" in alert.message


def test_class_word_is_flagged() -> None:
    (alert,) = _screen(["opioid for back pain"])
    assert alert.code == "opioid"
    assert "is listed as an opioid" in alert.message


@pytest.mark.parametrize(
    "condition",
    ["hepatitis", "Hepatitis C", "history of hepatitis C, cured", "hep B carrier", "HCV", "cirrhosis",
     "Liver disease", "liver failure", "hepatic impairment", "fatty liver", "NAFLD", "NASH", "MASLD",
     "autoimmune hepatitis", "non-alcoholic fatty liver disease", "elevated liver enzymes", "raised LFTs",
     "liver transplant 2019", "Primary biliary cholangitis"],
)
def test_liver_disease_is_an_overridable_stop(condition) -> None:
    alerts = _screen(conds=[condition])
    assert _codes(alerts) == ["liver_disease"]
    assert alerts[0].severity is Severity.OVERRIDABLE_STOP
    assert f'"{condition}"' in alerts[0].message
    assert "liver" in alerts[0].message


@pytest.mark.parametrize(
    "condition",
    ["Hepatitis B vaccine", "hep A vaccination", "hepatitis B immunised", "no liver disease", "liver function normal",
     "delivery 2019", "multiple sclerosis", "HBV vaccine series complete"],
)
def test_not_liver_disease(condition) -> None:
    assert _screen(conds=[condition]) == []


def test_liver_conditions_share_one_alert() -> None:
    (alert,) = _screen(conds=["hepatitis C", "cirrhosis"])
    assert '"cirrhosis", "hepatitis C"' in alert.message


@pytest.mark.parametrize(
    "med",
    ["Avonex", "Rebif 44 mcg", "Betaseron", "Extavia", "Plegridy", "interferon beta-1a", "interferon beta-1b",
     "peginterferon beta-1a", "IFN-beta", "interferon"],
)
def test_interferon_beta_is_a_warning(med) -> None:
    alerts = _screen([med])
    assert _codes(alerts) == ["interferon_beta"]
    assert alerts[0].severity is Severity.WARNING
    assert not alerts[0].blocks


@pytest.mark.parametrize("med", ["peginterferon alfa-2a", "interferon gamma", "Copaxone", "glatiramer"])
def test_other_interferons_and_glatiramer_do_not_alert(med) -> None:
    assert _screen([med]) == []


@pytest.mark.parametrize("condition", ["pregnant", "Pregnancy, 12 weeks", "breastfeeding", "breast-feeding",
                                       "lactating", "nursing", "Nursing mother"])
def test_pregnancy_and_breastfeeding_warn(condition) -> None:
    alerts = _screen(conds=[condition])
    assert _codes(alerts) == ["pregnancy_breastfeeding"]
    assert alerts[0].severity is Severity.WARNING


@pytest.mark.parametrize("condition", ["not pregnant", "lives in a nursing home", "no breastfeeding"])
def test_not_pregnancy(condition) -> None:
    assert _screen(conds=[condition]) == []


def test_has_spasticity() -> None:
    assert screening_rules.has_spasticity(["MS", "Spasticity (legs)"])
    assert screening_rules.has_spasticity(["spastic gait"])
    assert not screening_rules.has_spasticity(["no spasticity", "fatigue"])
    assert not screening_rules.has_spasticity([])


def test_spasticity_dose_is_screened_on_the_highest_dose() -> None:
    alerts = _screen(conds=["spasticity"], dose="4.5")
    assert _codes(alerts) == ["spasticity_dose"]
    assert _screen(conds=["spasticity"], dose="3") == []


def test_titration_low_steps_are_not_warnings() -> None:
    # A 0.5 mg start is a titration step: only the plan's highest / maintenance dose is checked.
    assert _screen(dose="4.5", maintenance_dose_mg=D("4.5"), titrating=True) == []


def test_maintenance_dose_is_checked_too() -> None:
    # A flare plan: 4.5 mg now, stepping down to a 1 mg maintenance dose.
    alerts = _screen(dose="4.5", maintenance_dose_mg=D("1"), titrating=True)
    assert _codes(alerts) == ["dose_outside_usual_range"]
    assert alerts[0].message.startswith("1 mg")


def test_screen_sorts_hard_stops_first_and_is_deterministic() -> None:
    meds = ["Avonex", "tramadol", "Copaxone"]
    conds = ["pregnant", "hepatitis", "spasticity"]
    alerts = _screen(meds, conds, dose="9")  # above 6 mg: a hard stop
    assert _codes(alerts) == ["dose_not_low_dose", "opioid", "liver_disease", "spasticity_dose",
                              "interferon_beta", "pregnancy_breastfeeding"]
    order = [a.severity for a in alerts]
    assert order == sorted(order, key=list(Severity).index)
    assert _screen(list(reversed(meds)), list(reversed(conds)), dose="9") == alerts


def test_blank_and_duplicate_entries_are_ignored() -> None:
    assert _screen(["", "   "], ["", " "]) == []
    assert len(_screen(["Norco", " norco ", "NORCO"])) == 1


def test_long_entries_are_shortened_in_messages() -> None:
    entry = "oxycodone " + "x" * 300
    (alert,) = _screen([entry])
    assert len(alert.message) <= 400
    assert "…" in alert.message
    conds = [f"hepatitis {i} " + "y" * 200 for i in range(5)]
    (alert,) = _screen(conds=conds)
    assert len(alert.message) <= 400
    assert "and 3 more" in alert.message


def test_grouped_messages_do_not_depend_on_list_order() -> None:
    assert _screen(conds=["hepatitis C", "Cirrhosis"]) == _screen(conds=["Cirrhosis", "hepatitis C"])
    (alert,) = _screen(["Rebif", "Avonex"])
    assert '("Avonex", "Rebif")' in alert.message


# ---------------------------------------------------------------- titration
def test_titration_step_validation() -> None:
    assert TitrationStep(D("1.5"), 14).dose_mg == D("1.5")
    assert TitrationStep("1.5", 14).dose_mg == D("1.5")  # type: ignore[arg-type]
    for days in (0, -1, 367, True, "14"):
        with pytest.raises(DoseError) as err:
            TitrationStep(D("1.5"), days)  # type: ignore[arg-type]
        assert "titration" in err.value.fields
    with pytest.raises(DoseError) as err:
        TitrationStep(D("0"), 7)
    assert "titration" in err.value.fields


def test_parse_titration_round_trip() -> None:
    steps = (TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14))
    data = [s.to_json() for s in steps]
    assert data == [{"dose_mg": "1.5", "days": 14}, {"dose_mg": "3", "days": 14}]
    assert r.parse_titration(data) == steps
    assert r.parse_titration([{"dose_mg": 1.5, "days": 7}]) == (TitrationStep(D("1.5"), 7),)
    assert r.parse_titration(None) == ()
    with pytest.raises(DoseError, match="Titration step 1"):
        r.parse_titration([{"days": 7}])


def test_titration_schedule_dates_and_units() -> None:
    steps = [TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14)]
    sched = r.titration_schedule(CAP, D("1.5"), steps, date(2026, 12, 1), D("4.5"))
    assert [(s.start, s.end, s.dose_mg, s.units_per_day) for s in sched] == [
        (date(2026, 12, 1), date(2026, 12, 14), D("1.5"), D(1)),
        (date(2026, 12, 15), date(2026, 12, 28), D("3"), D(2)),
        (date(2026, 12, 29), None, D("4.5"), D(3)),
    ]
    assert r.titration_chart_rows(sched, CAP) == [
        ("Dec 1 – Dec 14, 2026", "1 capsule", "1.5 mg"),
        ("Dec 15 – Dec 28, 2026", "2 capsules", "3 mg"),
        ("From Dec 29, 2026", "3 capsules", "4.5 mg"),
    ]


def test_chart_rows_across_years_single_days_and_liquids() -> None:
    steps = [TitrationStep(D("0.5"), 1), TitrationStep(D("1"), 14)]
    sched = r.titration_schedule(SL, D("1"), steps, date(2026, 12, 25), D("1.5"))
    assert r.titration_chart_rows(sched, SL) == [
        ("Dec 25, 2026", "0.5 mL", "0.5 mg"),
        ("Dec 26, 2026 – Jan 8, 2027", "1 mL", "1 mg"),
        ("From Jan 9, 2027", "1.5 mL", "1.5 mg"),
    ]


def test_fixed_dose_schedule_is_one_open_row() -> None:
    sched = r.titration_schedule(CAP, D("4.5"), [], date(2026, 1, 5), D("4.5"))
    assert len(sched) == 1 and sched[0].end is None and sched[0].units_per_day == 1


def test_titration_may_step_down_but_is_limited_to_twelve_steps() -> None:
    down = [TitrationStep(D("4.5"), 7), TitrationStep(D("3"), 7)]
    assert [s.dose_mg for s in r.titration_schedule(CAP, D("1.5"), down, date(2026, 1, 1), D("1.5"))] == [
        D("4.5"), D("3"), D("1.5")]
    with pytest.raises(DoseError, match="at most 12 steps") as err:
        r.titration_schedule(CAP, D("1.5"), [TitrationStep(D("1.5"), 1)] * 13, date(2026, 1, 1), D("4.5"))
    assert "titration" in err.value.fields


def test_titration_step_must_be_measurable() -> None:
    with pytest.raises(DoseError) as err:
        r.titration_schedule(CAP, D("1.5"), [TitrationStep(D("1"), 7)], date(2026, 1, 1), D("4.5"))
    assert err.value.message == "Titration step 1: 1 mg is not a whole number of 1.5 mg capsules."
    assert "titration" in err.value.fields


def test_remaining_steps() -> None:
    steps = (TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14))
    assert r.remaining_steps(steps, 0) == steps
    assert r.remaining_steps(steps, 10) == (TitrationStep(D("1.5"), 4), TitrationStep(D("3"), 14))
    assert r.remaining_steps(steps, 14) == (TitrationStep(D("3"), 14),)
    assert r.remaining_steps(steps, 20) == (TitrationStep(D("3"), 8),)
    assert r.remaining_steps(steps, 28) == ()
    assert r.remaining_steps(steps, 100) == ()


# ---------------------------------------------------------------- quantity and days supply
def test_quantity_for_days_fixed_and_titrated() -> None:
    assert r.quantity_for_days(CAP, D("1.5"), D("4.5"), 30) == 90
    assert r.quantity_for_days(CAP, D("4.5"), D("4.5"), 30) == 30
    assert r.quantity_for_days(SL, D("1"), D("1.5"), 30) == D("45")
    assert str(r.quantity_for_days(SL, D("1"), D("1.5"), 30)) == "45"
    assert r.quantity_for_days(CREAM, D("0.5"), D("1"), 7) == 14
    steps = [TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14)]
    assert r.quantity_for_days(CAP, D("1.5"), D("4.5"), 30, steps) == 14 + 28 + 6
    assert r.quantity_for_days(CAP, D("1.5"), D("4.5"), 10, steps) == 10
    assert r.quantity_for_days(CAP, D("1.5"), D("4.5"), 0, steps) == 0
    with pytest.raises(SupplyError):
        r.quantity_for_days(CAP, D("1.5"), D("4.5"), -1)


def test_days_for_quantity() -> None:
    assert r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(90)) == 30
    assert r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(92)) == 30  # a part-dose does not make a day
    assert r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(2)) == 0
    assert r.days_for_quantity(SL, D("1"), D("1.5"), D("30")) == 20
    steps = [TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14)]
    assert r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(45), steps) == 29
    assert r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(13), steps) == 13
    with pytest.raises(SupplyError):
        r.days_for_quantity(CAP, D("1.5"), D("4.5"), D(-1))


@st.composite
def plans(draw):
    """(form, strength, maintenance dose, steps) whose doses are all measurable."""
    form = draw(st.sampled_from(list(Form)))
    if form is CAP:
        strength = draw(st.sampled_from(["0.5", "1", "1.5", "3", "4.5"]).map(D))

        def dose():
            return strength * draw(st.integers(min_value=1, max_value=6))
    else:
        strength = draw(st.sampled_from(["0.5", "1", "2"]).map(D))

        def dose():  # 0.1 to 6 mL a dose
            return strength * D(draw(st.integers(min_value=1, max_value=60))) / 10
    steps = [TitrationStep(dose(), draw(st.integers(min_value=1, max_value=40)))
             for _ in range(draw(st.integers(min_value=0, max_value=4)))]
    return form, strength, dose(), steps


@settings(max_examples=300)
@given(plans(), st.integers(min_value=0, max_value=366))
def test_quantity_and_days_round_trip(plan, days) -> None:
    form, strength, dose, steps = plan
    qty = r.quantity_for_days(form, strength, dose, days, steps)
    assert r.days_for_quantity(form, strength, dose, qty, steps) == days
    # One more day always needs more: the quantity is the least that lasts `days` days.
    assert r.quantity_for_days(form, strength, dose, days + 1, steps) > qty
    if days:
        assert r.resolve_quantity_and_days(form, strength, dose, quantity=None, days_supply=days,
                                           steps=steps) == (qty, days)
        assert r.resolve_quantity_and_days(form, strength, dose, quantity=qty, days_supply=days,
                                           steps=steps) == (qty, days)
        assert r.resolve_quantity_and_days(form, strength, dose, quantity=qty, days_supply=None,
                                           steps=steps) == (qty, days)


@settings(max_examples=200)
@given(plans(), st.integers(min_value=0, max_value=2000))
def test_days_for_quantity_never_overstates(plan, tenths) -> None:
    form, strength, dose, steps = plan
    qty = D(tenths) if form is CAP else D(tenths) / 10
    days = r.days_for_quantity(form, strength, dose, qty, steps)
    assert r.quantity_for_days(form, strength, dose, days, steps) <= qty
    assert r.quantity_for_days(form, strength, dose, days + 1, steps) > qty


def test_resolve_mismatch_explains_itself() -> None:
    with pytest.raises(SupplyError) as err:
        r.resolve_quantity_and_days(CAP, D("1.5"), D("4.5"), quantity=D(30), days_supply=30)
    assert err.value.message == "30 capsules last 10 days at 3 capsules a day, not 30."
    assert set(err.value.fields) == {"quantity", "days_supply"}


def test_resolve_mismatch_with_titration() -> None:
    steps = [TitrationStep(D("1.5"), 14)]
    with pytest.raises(SupplyError, match="last 24 days following the titration plan, not 30"):
        r.resolve_quantity_and_days(CAP, D("1.5"), D("4.5"), quantity=D(44), days_supply=30, steps=steps)


def test_resolve_accepts_a_spare_part_dose() -> None:
    assert r.resolve_quantity_and_days(CAP, D("1.5"), D("4.5"), quantity=D(31), days_supply=10) == (D(31), 10)


@pytest.mark.parametrize(
    ("form", "quantity", "days", "fields"),
    [(CAP, None, None, {"quantity", "days_supply"}), (CAP, None, 0, {"days_supply"}),
     (CAP, None, 367, {"days_supply"}), (CAP, D(0), None, {"quantity"}), (CAP, D(-3), None, {"quantity"}),
     (CAP, D("30.5"), None, {"quantity"}), (SL, D("30.05"), None, {"quantity"}), (CAP, D(2), None, {"quantity"}),
     (CAP, D(3000), None, {"quantity"})],
)
def test_resolve_bounds(form, quantity, days, fields) -> None:
    strength = D("1.5") if form is CAP else D("1")
    with pytest.raises(SupplyError) as err:
        r.resolve_quantity_and_days(form, strength, D("4.5"), quantity=quantity, days_supply=days)
    assert set(err.value.fields) == fields


def test_resolve_less_than_a_day() -> None:
    with pytest.raises(SupplyError, match="2 capsules is less than one day's dose at 3 capsules a day"):
        r.resolve_quantity_and_days(CAP, D("1.5"), D("4.5"), quantity=D(2), days_supply=None)


# ---------------------------------------------------------------- directions
@pytest.mark.parametrize(
    ("form", "strength", "dose", "timing", "text"),
    [(CAP, "1.5", "4.5", DosingTime.BEDTIME, "Take 3 capsules (4.5 mg) by mouth at bedtime."),
     (CAP, "4.5", "4.5", DosingTime.BEDTIME, "Take 1 capsule (4.5 mg) by mouth at bedtime."),
     (CAP, "1.5", "1.5", DosingTime.MORNING, "Take 1 capsule (1.5 mg) by mouth in the morning."),
     (SL, "1", "1.5", DosingTime.BEDTIME,
      "Place 1.5 mL (1.5 mg) under the tongue at bedtime. Hold for 1 minute, then swallow."),
     (CREAM, "0.5", "1", DosingTime.BEDTIME,
      "Apply 2 mL (1 mg) to the skin of the inner wrist or forearm at bedtime and rub in well."),
     (CAP, "0.5", "0.5", "morning", "Take 1 capsule (0.5 mg) by mouth in the morning.")],
)
def test_directions(form, strength, dose, timing, text) -> None:
    got = r.directions(form, D(strength), D(dose), timing)
    assert got == text
    for banned in ("HS", "qhs", "QHS", "cc", ".0 ", " .", "po"):
        assert banned not in got


def test_directions_with_titration() -> None:
    steps = [TitrationStep(D("1.5"), 14), TitrationStep(D("3"), 14)]
    assert r.directions(CAP, D("1.5"), D("4.5"), DosingTime.BEDTIME, steps) == (
        "Follow the dated chart: take 1 capsule (1.5 mg) by mouth at bedtime, increasing as shown, "
        "up to 3 capsules (4.5 mg).")
    assert r.directions(SL, D("1"), D("4.5"), DosingTime.BEDTIME, [TitrationStep(D("0.5"), 7)]) == (
        "Follow the dated chart: place 0.5 mL (0.5 mg) under the tongue at bedtime, increasing as shown, "
        "up to 4.5 mL (4.5 mg). Hold for 1 minute, then swallow.")
    assert r.directions(CREAM, D("0.5"), D("1"), DosingTime.MORNING, [TitrationStep(D("0.5"), 7)]) == (
        "Follow the dated chart: apply 1 mL (0.5 mg) to the skin of the inner wrist or forearm in the morning, "
        "increasing as shown, up to 2 mL (1 mg). Rub in well.")
    assert "decreasing as shown, to 1 capsule (1.5 mg)" in r.directions(
        CAP, D("1.5"), D("1.5"), DosingTime.BEDTIME, [TitrationStep(D("4.5"), 7)])
    assert "changing as shown, then 2 capsules (3 mg)" in r.directions(
        CAP, D("1.5"), D("3"), DosingTime.BEDTIME, [TitrationStep(D("1.5"), 7), TitrationStep(D("4.5"), 7)])


def test_directions_refuse_unmeasurable_doses() -> None:
    with pytest.raises(DoseError):
        r.directions(CAP, D("1.5"), D("4"), DosingTime.BEDTIME)


# ---------------------------------------------------------------- NPI
def test_validate_npi() -> None:
    assert r.npi_is_valid("1234567893")
    assert r.validate_npi(" 1234567893 ") == "1234567893"
    cases = {"123456789": "10 digits", "12345678901": "10 digits", "12345abc93": "10 digits", "": "10 digits",
             "3234567893": "starts with 1 or 2", "1234567890": "check digit"}
    for npi, fragment in cases.items():
        with pytest.raises(ValidationFailed) as err:
            r.validate_npi(npi)
        assert fragment in err.value.message
        assert list(err.value.fields) == ["npi"]
    with pytest.raises(ValidationFailed):
        r.validate_npi(None)


def test_rules_module_is_pure() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(r))
    mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in mods if m and m.split(".")[0] in {"flask", "sqlalchemy", "marshmallow"}]
    assert not [m for m in mods if m and m.endswith(("models", "extensions"))]
