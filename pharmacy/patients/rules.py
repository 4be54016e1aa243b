"""Patient rules (pure): side effects worth logging and what to suggest, and tidy free-text lists.

Every rule cites the section of docs/domain.md it implements.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pharmacy.core.errors import ValidationFailed


class SideEffect(StrEnum):
    """docs/domain.md "Side effects worth logging" (the last three were seen in a trial)."""

    VIVID_DREAMS = "vivid_dreams"
    INSOMNIA = "insomnia"
    NAUSEA = "nausea"
    CONSTIPATION = "constipation"
    DIARRHOEA = "diarrhoea"
    HEADACHE = "headache"
    MORNING_STIFFNESS = "morning_stiffness"
    DRY_MOUTH = "dry_mouth"
    SYMPTOM_FLARE = "symptom_flare"
    LIVER_ENZYMES = "liver_enzymes"
    URINARY_TRACT_INFECTION = "urinary_tract_infection"
    AGITATION = "agitation"
    OTHER = "other"


LABELS: dict[SideEffect, str] = {
    SideEffect.VIVID_DREAMS: "Vivid dreams",
    SideEffect.INSOMNIA: "Sleep disturbance / insomnia",
    SideEffect.NAUSEA: "Nausea",
    SideEffect.CONSTIPATION: "Constipation",
    SideEffect.DIARRHOEA: "Diarrhoea",
    SideEffect.HEADACHE: "Headache",
    SideEffect.MORNING_STIFFNESS: "Morning stiffness",
    SideEffect.DRY_MOUTH: "Dry mouth",
    SideEffect.SYMPTOM_FLARE: "Temporary rise in MS symptoms",
    SideEffect.LIVER_ENZYMES: "Raised liver enzymes",
    SideEffect.URINARY_TRACT_INFECTION: "Urinary tract infection",
    SideEffect.AGITATION: "Agitation",
    SideEffect.OTHER: "Other",
}

GUT_EFFECTS = frozenset({SideEffect.NAUSEA, SideEffect.CONSTIPATION, SideEffect.DIARRHOEA})
SLEEP_EFFECTS = frozenset({SideEffect.VIVID_DREAMS, SideEffect.INSOMNIA})
MAX_ITEM_LENGTH = 120
MAX_ITEMS = 100


def suggested_action(effect: SideEffect, *, form: str | None, persistent: bool,
                     dosing_time: str | None = None) -> str | None:
    """What the pharmacist might suggest, per docs/domain.md "Side effects worth logging"; None when the
    domain gives no specific advice (the effect is still logged). `form` is a prescriptions Form value
    ("capsule", …) and `dosing_time` a DosingTime value ("bedtime", "morning"), when known.
    """
    effect = SideEffect(effect)
    if effect in GUT_EFFECTS and persistent:
        # docs/domain.md: persistent gut problems → consider sublingual or transdermal (they bypass the gut).
        if form == "capsule":
            return ("Persistent stomach or bowel trouble on capsules: ask the prescriber about the sublingual "
                    "liquid or transdermal cream, which bypass the gut.")
        return "Persistent stomach or bowel trouble: tell the prescriber."
    if effect is SideEffect.NAUSEA:
        return "Nausea is common when starting and usually goes away in about two weeks."
    if effect in SLEEP_EFFECTS and persistent:
        # docs/domain.md: sleep problems → consider changing the dosing time.
        if dosing_time == "morning":
            return "Sleep problems continue although the dose is taken in the morning: tell the prescriber."
        return "Persistent sleep problems: ask the prescriber about moving the dose to the morning."
    if effect is SideEffect.VIVID_DREAMS:
        return "Vivid dreams are common in the first week and usually settle."
    if effect is SideEffect.INSOMNIA:
        return "Sleep problems often settle; if they persist, the prescriber may move the dose to the morning."
    if effect is SideEffect.SYMPTOM_FLARE:
        # docs/domain.md: under 10% see a temporary rise (weeks, rarely up to three months); usual answer: reduce.
        return ("A temporary rise in symptoms usually settles within weeks (rarely up to three months); the usual "
                "answer is a temporary dose reduction: contact the prescriber.")
    if effect is SideEffect.LIVER_ENZYMES:
        # docs/domain.md "Safety screening": naltrexone is cleared by the liver.
        return ("Pharmacist review: naltrexone is cleared by the liver. Contact the prescriber about liver "
                "tests before the next fill.")
    if effect is SideEffect.MORNING_STIFFNESS and persistent:
        # docs/domain.md "Dosing": LDN may add muscle stiffness; with spasticity, no more than 3 mg.
        return ("LDN may add muscle stiffness: if the patient has spasticity the dose should not exceed 3 mg; "
                "tell the prescriber.")
    if persistent:
        return "Persistent: tell the prescriber."
    return None


def normalise_list(items: Iterable[str], *, field: str = "items") -> list[str]:
    """Medications or conditions as a clean list: spaces tidied, blanks dropped, duplicates (ignoring case)
    dropped keeping the first spelling, order kept. Screening matches these entries as typed
    (docs/domain.md "Safety screening"), so each must be short enough to read in an alert.
    """
    seen: set[str] = set()
    out: list[str] = []
    for raw in items:
        text = " ".join(str(raw).split())
        if not text:
            continue
        if len(text) > MAX_ITEM_LENGTH:
            msg = f'"{text[:40]}…" is longer than {MAX_ITEM_LENGTH} characters; split it into separate entries.'
            raise ValidationFailed(msg, fields={field: msg})
        key = text.casefold()
        if key not in seen:
            seen.add(key)
            out.append(text)
    if len(out) > MAX_ITEMS:
        msg = f"At most {MAX_ITEMS} entries."
        raise ValidationFailed(msg, fields={field: msg})
    return out


def parse_list_text(text: str | None, *, field: str = "items") -> list[str]:
    """A textarea with one entry per line -> a normalised list (commas stay: "Tylenol with codeine, 30 mg")."""
    return normalise_list((text or "").splitlines(), field=field)


def name_key(last: str, first: str) -> str:
    """"ellison, margaret": the lower-cased key that name search reads as a prefix range (an index scan)."""
    return f"{last.strip()}, {first.strip()}".lower()
