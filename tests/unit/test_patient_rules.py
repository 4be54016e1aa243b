"""Patient rules: side effects worth logging and their suggestions; tidy free-text lists."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.core.errors import ValidationFailed
from pharmacy.patients import rules as p
from pharmacy.patients.rules import SideEffect as E


def test_side_effects_cover_the_domain_list() -> None:
    assert [e.value for e in E] == [
        "vivid_dreams", "insomnia", "nausea", "constipation", "diarrhoea", "headache", "morning_stiffness",
        "dry_mouth", "symptom_flare", "liver_enzymes", "urinary_tract_infection", "agitation", "other"]
    assert set(p.LABELS) == set(E)
    assert all(label and label[0].isupper() for label in p.LABELS.values())


@pytest.mark.parametrize("effect", [E.NAUSEA, E.CONSTIPATION, E.DIARRHOEA])
def test_persistent_gut_trouble_on_capsules_suggests_another_form(effect) -> None:
    text = p.suggested_action(effect, form="capsule", persistent=True)
    assert text is not None and "sublingual" in text and "transdermal" in text
    other = p.suggested_action(effect, form="sublingual_liquid", persistent=True)
    assert other is not None and "sublingual" not in other


def test_nausea_usually_passes() -> None:
    text = p.suggested_action(E.NAUSEA, form="capsule", persistent=False)
    assert text is not None and "two weeks" in text


@pytest.mark.parametrize("effect", [E.CONSTIPATION, E.DIARRHOEA, E.HEADACHE, E.DRY_MOUTH, E.OTHER,
                                    E.URINARY_TRACT_INFECTION, E.AGITATION, E.MORNING_STIFFNESS])
def test_no_advice_when_not_persistent(effect) -> None:
    assert p.suggested_action(effect, form="capsule", persistent=False) is None


@pytest.mark.parametrize("effect", [E.VIVID_DREAMS, E.INSOMNIA])
def test_persistent_sleep_problems_suggest_morning(effect) -> None:
    text = p.suggested_action(effect, form="capsule", persistent=True)
    assert text is not None and "morning" in text
    already = p.suggested_action(effect, form="capsule", persistent=True, dosing_time="morning")
    assert already is not None and "although the dose is taken in the morning" in already
    assert "moving the dose" not in already


def test_vivid_dreams_first_week() -> None:
    text = p.suggested_action(E.VIVID_DREAMS, form=None, persistent=False)
    assert text is not None and "first week" in text


def test_flare_suggests_temporary_reduction() -> None:
    for persistent in (True, False):
        text = p.suggested_action(E.SYMPTOM_FLARE, form=None, persistent=persistent)
        assert text is not None
        assert "temporary dose reduction" in text
        assert "three months" in text


def test_liver_enzymes_need_a_pharmacist() -> None:
    text = p.suggested_action(E.LIVER_ENZYMES, form="capsule", persistent=False)
    assert text is not None and text.startswith("Pharmacist review") and "liver" in text


def test_persistent_stiffness_mentions_the_spasticity_cap() -> None:
    text = p.suggested_action(E.MORNING_STIFFNESS, form="capsule", persistent=True)
    assert text is not None and "3 mg" in text


def test_persistent_other_effects_go_to_the_prescriber() -> None:
    assert p.suggested_action(E.HEADACHE, form=None, persistent=True) == "Persistent: tell the prescriber."


def test_every_effect_has_an_answer_or_none() -> None:
    for effect in E:
        for form in (None, "capsule", "sublingual_liquid", "transdermal_cream"):
            for persistent in (True, False):
                out = p.suggested_action(effect, form=form, persistent=persistent)
                assert out is None or (out.endswith(".") and "HS" not in out)


def test_normalise_list() -> None:
    assert p.normalise_list(["  Baclofen ", "", "   ", "baclofen", "Vitamin  D", "BACLOFEN 10 mg"]) == [
        "Baclofen", "Vitamin D", "BACLOFEN 10 mg"]
    assert p.normalise_list([]) == []
    assert p.normalise_list(iter(["a", "A", "b"])) == ["a", "b"]


def test_normalise_list_refuses_long_entries() -> None:
    assert p.normalise_list(["x" * 120]) == ["x" * 120]
    with pytest.raises(ValidationFailed) as err:
        p.normalise_list(["ok", "y" * 121], field="medications")
    assert list(err.value.fields) == ["medications"]
    assert "120" in err.value.message


def test_normalise_list_limits_count() -> None:
    assert len(p.normalise_list([f"m{i}" for i in range(100)])) == 100
    with pytest.raises(ValidationFailed):
        p.normalise_list([f"m{i}" for i in range(101)])


def test_parse_list_text() -> None:
    assert p.parse_list_text("Baclofen\r\n\nTylenol with codeine, 30 mg\n baclofen ") == [
        "Baclofen", "Tylenol with codeine, 30 mg"]
    assert p.parse_list_text(None) == []


@given(st.lists(st.text(alphabet=st.sampled_from("abcAB \t-"), max_size=20), max_size=30))
def test_normalise_list_properties(items) -> None:
    out = p.normalise_list(items)
    assert all(x == x.strip() and x and "  " not in x for x in out)
    assert len({x.casefold() for x in out}) == len(out)
    assert p.normalise_list(out) == out  # idempotent
    kept = [" ".join(i.split()) for i in items if i.strip()]
    assert [x.casefold() for x in out] == list(dict.fromkeys(k.casefold() for k in kept))
