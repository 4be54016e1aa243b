"""The safety screening table and its matching (pure, like rules.py): which medication and condition entries
are opioids, liver disease, interferon beta, pregnancy or spasticity, and `screen`, which turns a patient's lists
and the prescription's doses into alerts (docs/domain.md "Safety screening"). Running it against stored alerts is
prescriptions/screening.py.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

from pharmacy.prescriptions.rules import SEVERITY_RANK, Alert, Severity, check_dose, to_decimal

# --------------------------------------------------------------------------------------------
# Screening tables (docs/domain.md "Safety screening")
#
# Decisions:
# * Opioids are searched in the medication list only (it is the list of *current* medicines).
#   Searching conditions would turn "history of oxycodone dependence" into an un-overridable stop.
# * Every opioid mention on the medication list stops the fill, including "stopped tramadol last
#   week" or "oxycodone PRN": recent use also precipitates withdrawal, and the message names the
#   entry so staff can correct a wrong list. Two kinds of entry are not medicines and are skipped:
#   allergies ("morphine allergy", "allergic to codeine") and negations ("no opioids", "none").
# * Diphenoxylate (Lomotil) and difenoxin (Motofen) ARE flagged: they are absorbed opioids
#   (Schedule V), and the naltrexone label warns that opioid antidiarrhoeals may not work.
#   Loperamide (Imodium) and eluxadoline (Viberzi) act in the gut with negligible absorption, and
#   dextromethorphan is not an opioid agonist: not flagged. Antagonists (naloxone, nalmefene,
#   methylnaltrexone, naloxegol, naldemedine) are not flagged. Kratom (a mu agonist) is flagged.
# * Conditions: liver disease is an overridable stop; "hepatitis B vaccine" is not liver disease,
#   but "hepatitis C, cured" is flagged (a pharmacist overrides with a reason).
# * Names match case-insensitively on word boundaries, so "Percocet 5/325 mg" and "OXYCONTIN ER"
#   match while "apomorphine" does not match morphine.
# --------------------------------------------------------------------------------------------
OPIOIDS: dict[str, tuple[str, ...]] = {
    "oxycodone": ("oxycodone", "OxyContin", "Percocet", "Percodan", "Roxicodone", "Roxicet", "Roxybond", "Xtampza",
                  "Endocet", "Endodan", "Oxaydo", "Primlev", "Nalocet", "Prolate", "Tylox", "Xartemis", "Troxyca",
                  "Targiniq", "Oxecta", "OxyIR",
                  r"re:oxycod(?=\s*[/-]|\b)"),  # "OXYCOD/APAP 5-325": the abbreviation on dispensing labels
    "hydrocodone": ("hydrocodone", "Vicodin", "Norco", "Lortab", "Lorcet", "Hysingla", "Zohydro", "Vicoprofen",
                    "Xodol", "Hycet", "Zamicet", "Verdrocet", "Reprexain", "Ibudone", "Hycodan", "Hydromet",
                    "Tussionex", "TussiCaps", "Hycofenix", "Rezira", "Vituz", "Zutripro", "benzhydrocodone", "Apadaz",
                    "Flowtuss", "Obredon", r"re:hydrocod(?=\s*[/-]|\b)"),  # "HYDROCOD/APAP" on labels
    "tramadol": ("tramadol", "Ultram", "Ultracet", "ConZip", "Ryzolt", "Qdolo", "Seglentis"),
    "codeine": ("codeine", "Tuzistra", "Tuxarin", "Brontex", "Triacin-C",
                r"re:tylenol[\s-]*(?:#|no\.?|number)?\s*[34](?![\d.,/])(?!\s*(?:times|x)\b)",
                r"re:\w*tuss(?:in)?[\s-]*d?a[\s.-]?c", r"re:guaifenesin[\s-]+a[\s.-]?c\b"),
    "dihydrocodeine": ("dihydrocodeine", "Synalgos", "Trezix", "Panlor"),
    "morphine": ("morphine", "MS Contin", "MSIR", "Kadian", "Avinza", "Arymo", "MorphaBond", "Roxanol", "Duramorph",
                 "Infumorph", "Embeda", "Oramorph"),
    "fentanyl": ("fentanyl", "Duragesic", "Actiq", "Fentora", "Abstral", "Lazanda", "Subsys", "Onsolis", "Ionsys",
                 "Sublimaze"),
    "sufentanil": ("sufentanil", "Dsuvia", "Sufenta"),
    "remifentanil": ("remifentanil", "Ultiva"),
    "alfentanil": ("alfentanil", "Alfenta"),
    "hydromorphone": ("hydromorphone", "Dilaudid", "Exalgo"),
    "oxymorphone": ("oxymorphone", "Opana"),
    "methadone": ("methadone", "Dolophine", "Methadose", "Diskets"),
    "buprenorphine": ("buprenorphine", "Suboxone", "Subutex", "Butrans", "Belbuca", "Zubsolv", "Sublocade",
                      "Bunavail", "Buprenex", "Brixadi", "Cassipa", "Probuphine"),
    "tapentadol": ("tapentadol", "Nucynta"),
    "meperidine": ("meperidine", "pethidine", "Demerol"),
    "levorphanol": ("levorphanol",),
    "butorphanol": ("butorphanol", "Stadol"),
    "pentazocine": ("pentazocine", "Talwin"),
    "nalbuphine": ("nalbuphine", "Nubain"),
    "propoxyphene": ("propoxyphene", "Darvon", "Darvocet"),
    "oliceridine": ("oliceridine", "Olinvyk"),
    "diphenoxylate": ("diphenoxylate", "Lomotil"),
    "difenoxin": ("difenoxin", "Motofen"),
    "opium": ("opium", "paregoric", "laudanum"),
    "heroin": ("heroin", "diamorphine"),
    # Kratom and its concentrated alkaloid, sold as "7-OH" (7-hydroxymitragynine): a mu agonist stronger than morphine.
    "kratom": ("kratom", "mitragynine", r"re:\d*-?hydroxymitragynine", r"re:7[\s-]?OH(?![\w])"),
    # Class words on the list ("opioid for back pain"), but not "opioid antagonist" (naltrexone itself).
    "an opioid": (r"re:opi(?:oid|ate)s?(?![\s-]*(?:antagonist|blocker|receptor|free))", "narcotic pain"),
}
LIVER_TERMS: tuple[str, ...] = (
    r"re:hepatitis", "hep A", "hep B", "hep C", "HBV", "HCV", "cirrhosis", "cirrhotic", "liver disease", "liver failure",
    "ESLD",
    r"re:liver[\s-]+(?:damage|fibrosis|cancer|transplant\w*|impairment|injury|dysfunction|insufficiency)",
    r"re:hepatic[\s-]+(?:impairment|insufficiency|failure|disease|dysfunction|encephalopathy|steatosis|fibrosis)",
    "fatty liver", "steatohepatitis", "NAFLD", "NASH", "MASLD", "MASH", "hepatocellular",
    "primary biliary cholangitis", "primary sclerosing cholangitis", "transaminitis",
    r"re:(?:elevated|raised|high|abnormal|increased)\s+(?:liver\s+(?:enzymes|function\s+tests?|tests?)|lfts?|alt|ast"
    r"|transaminases?)",
    # The way problem lists often write it: the finding first ("LFTs elevated", "transaminases raised").
    r"re:(?:liver\s+(?:enzymes|function\s+tests?|tests?)|lfts?|transaminases?)\s+(?:elevated|raised|high|abnormal"
    r"|increased|up)",
)
LIVER_EXCLUDE = re.compile(r"vaccin|immuni[sz]", re.IGNORECASE)  # "Hepatitis B vaccine" is not liver disease
INTERFERON_BETA_TERMS: tuple[str, ...] = (
    "Avonex", "Rebif", "Betaseron", "Betaferon", "Extavia", "Plegridy",
    r"re:(?:peg[\s-]?)?interferon(?![\s-]*(?:alfa|alpha|gamma|α|γ))", r"re:ifn[\s-]*(?:beta|β|b)\b",
)
PREGNANCY_TERMS: tuple[str, ...] = (
    "pregnant", "pregnancy", "breastfeeding", "breast feeding", "lactating", "lactation",
    r"re:nursing(?![\s-]+(?:home|facility|care|student|assistant))",
)
SPASTICITY_TERMS: tuple[str, ...] = (r"re:spastic\w*",)
# An allergy (or hypersensitivity) to naltrexone itself, by name or brand, in the patient's allergy list.
NALTREXONE_ALLERGY_TERMS: tuple[str, ...] = ("naltrexone", "ReVia", "Vivitrol", "Depade", "LDN", "Contrave", "Mysimba")
# Naltrexone already taken, at full dose (tablets, the monthly injection, naltrexone/bupropion for weight): on the
# medication list beside an LDN prescription it is a duplication a pharmacist must clear.
NALTREXONE_TAKEN_TERMS: tuple[str, ...] = ("naltrexone", "ReVia", "Vivitrol", "Depade", "Contrave", "Mysimba")

# An entry that denies any use ("no opioids", "none", "denies opioid use", "negative for opiates") is not a medicine;
# "no longer taking oxycodone (last dose yesterday)" or "not taking tramadol since Monday" is recent use, and stops.
_NEGATION = re.compile(
    r"^\s*(?:none|nil|denies|denied|negative\s+for)(?![\w.])"
    r"|^\s*(?:no|not)(?![\w.])(?!\s+(?:longer|taking|since|using|on\b))",
    re.IGNORECASE)
_ALLERGY = re.compile(
    r"\b(?:allergic|allergy|allergies|intolerant|intolerance)\s+to\b"
    r"|^\s*(?:allerg(?:y|ies|ic)|intoleran(?:t|ce))\s*[:\-]"
    r"|\b(?:allergy|allergies|intolerance)\s*\)?\s*$"
    r"|\(\s*(?:allergy|allergic|intolerance)\s*\)",
    re.IGNORECASE,
)


def _term_regex(term: str) -> str:
    # A plain name: spaces and hyphens interchangeable, an optional plural; "re:" terms are regexes.
    plain = r"[\s-]*".join(re.escape(t) for t in re.split(r"[\s-]+", term.strip())) + "s?"
    body = term[3:] if term.startswith("re:") else plain
    # Not inside a longer word, but a strength may run straight on ("tramadol50mg", "Avonex30mcg"): a letter
    # after the name ends the match, a digit does not.
    return rf"(?<![^\W_])(?:{body})(?![^\W\d_])"


def _compile(terms: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(_term_regex(t) for t in terms), re.IGNORECASE)


_OPIOID_RES = [(generic, _compile(names)) for generic, names in OPIOIDS.items()]
_LIVER_RE = _compile(LIVER_TERMS)
_INTERFERON_RE = _compile(INTERFERON_BETA_TERMS)
_PREGNANCY_RE = _compile(PREGNANCY_TERMS)
_SPASTICITY_RE = _compile(SPASTICITY_TERMS)
_NALTREXONE_RE = _compile(NALTREXONE_ALLERGY_TERMS)
_NALTREXONE_TAKEN_RE = _compile(NALTREXONE_TAKEN_TERMS)


def _entries(items: Sequence[str]) -> list[str]:
    """Stripped, non-blank, non-negated entries, de-duplicated case-insensitively, in order."""
    seen, out = set(), []
    for raw in items:
        text = " ".join(str(raw).split())
        if text and not _NEGATION.search(text) and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


def _outside_allergy_words(entry: str) -> str:
    """The entry without what its allergy words are about: "morphine allergy" and "allergic to codeine" name no
    medicine taken, but "Norco 5/325 PRN (allergic to ibuprofen)" still names Norco. An entry that is an allergy as a
    whole ("Allergy: morphine", "codeine (allergy)") leaves nothing."""
    if not _ALLERGY.search(entry):
        return entry
    if re.match(r"^\s*(?:allerg(?:y|ies|ic)|intoleran(?:t|ce))\b", entry, re.IGNORECASE) or re.search(
            r"\b(?:allergy|allergies|intolerance)\s*\)?\s*$|\(\s*(?:allergy|allergic|intolerance)\s*\)", entry,
            re.IGNORECASE):
        return ""
    # "… (allergic to X)" or "…, allergic to X": the words after "allergic to" up to a closing bracket or the end.
    return re.sub(r"\(?\s*\b(?:allergic|allergy|allergies|intolerant|intolerance)\s+to\b[^)]*\)?", " ", entry,
                  flags=re.IGNORECASE)


_LOW_DOSE = re.compile(r"\blow[\s-]*dose\b|\bLDN\b|\bcompounded\b", re.IGNORECASE)
_MG = re.compile(r"(\d+(?:\.\d+)?)\s*mg\b(?!\s*/)", re.IGNORECASE)


def _is_ldn(entry: str) -> bool:
    """The patient's own LDN on their medication list ("LDN 4.5 mg", "low dose naltrexone", "naltrexone 3 mg at
    night"): not a second naltrexone. A brand of full-dose naltrexone (Vivitrol, Contrave …) never is."""
    if re.search(r"vivitrol|contrave|mysimba|revia|depade", entry, re.IGNORECASE):
        return False
    if _LOW_DOSE.search(entry):
        return True
    doses = [Decimal(d) for d in _MG.findall(entry)]
    return bool(doses) and max(doses) <= Decimal(6)


def opioids_in(medication: str) -> list[str]:
    """The opioid generics an entry names, in the order they appear ("Suboxone" -> ["buprenorphine"])."""
    found = []
    for generic, rx in _OPIOID_RES:
        m = rx.search(medication)
        if m:
            found.append((m.start(), generic))
    return [g for _, g in sorted(found)]


def has_spasticity(conditions: Sequence[str]) -> bool:
    """docs/domain.md "Dosing": spasticity caps the dose at 3 mg. Any "spastic…" word counts."""
    return any(_SPASTICITY_RE.search(c) for c in _entries(conditions))


def _shown(entry: str, limit: int = 120) -> str:
    """An entry as typed, cut to fit the alert's 400-character message."""
    return entry if len(entry) <= limit else entry[:limit - 1] + "…"


def _quoted(entries: list[str]) -> str:
    """Up to two entries, sorted so a reordered list gives the same message (the service matches on it)."""
    ordered = sorted(entries, key=str.casefold)
    text = ", ".join(f'"{_shown(e, 80)}"' for e in ordered[:2])
    return text + (f" and {len(ordered) - 2} more" if len(ordered) > 2 else "")


def screen(
    *,
    medications: Sequence[str],
    conditions: Sequence[str],
    max_dose_mg: Decimal | int | str,
    maintenance_dose_mg: Decimal | int | str | None = None,
    titrating: bool = False,
    allergies: Sequence[str] = (),
) -> list[Alert]:
    """docs/domain.md "Safety screening" (at intake and at every refill), hard stops first.

    One alert per opioid entry (each names what the patient takes); one alert per other finding,
    naming every entry that triggered it. Doses: the highest dose in the plan and the maintenance
    dose are checked; titration steps below them are not (docs/domain.md "Dosing": start low, titrate up),
    which is why `titrating` needs no extra checks here — the caller passes the plan's highest dose.
    """
    alerts = [*_medication_findings(medications), *_condition_findings(conditions)]
    allergic = [a for a in _entries(allergies) if _NALTREXONE_RE.search(a)]
    if allergic:
        alerts.append(Alert("naltrexone_allergy", Severity.OVERRIDABLE_STOP,
                            f"Allergy to naltrexone on file ({_quoted(allergic)}): hypersensitivity to naltrexone is a "
                            "contraindication. A pharmacist must check it with the patient or prescriber and record a "
                            "reason before filling."))
    alerts += _dose_findings(max_dose_mg, maintenance_dose_mg, spastic=has_spasticity(conditions))
    return sorted(alerts, key=lambda a: (SEVERITY_RANK[a.severity], a.code, a.message))

def _medication_findings(medications: Sequence[str]) -> list[Alert]:
    """The medication list: each opioid entry (a hard stop naming it), full-dose naltrexone already taken, interferon."""
    alerts: list[Alert] = []
    for med in _entries(medications):
        generics = opioids_in(_outside_allergy_words(med))
        if generics:
            named = [g for g in generics if g != "an opioid"]
            what = f"contains {' and '.join(named)}, an opioid" if named else "is listed as an opioid"
            alerts.append(Alert("opioid", Severity.HARD_STOP,
                                f'"{_shown(med)}" {what}: naltrexone blocks opioids and can bring on withdrawal. '
                                "LDN cannot be filled while the patient takes it."))
    interferon = [m for m in _entries(medications) if _INTERFERON_RE.search(m) and not _ALLERGY.search(m)]
    if interferon:
        alerts.append(Alert("interferon_beta", Severity.WARNING,
                            f"Interferon beta ({_quoted(interferon)}): possible interaction with LDN. "
                            "Tell the patient, and the prescriber if new symptoms appear."))
    taking = [m for m in _entries(medications)
              if _NALTREXONE_TAKEN_RE.search(_outside_allergy_words(m)) and not _is_ldn(m)]
    if taking:
        alerts.append(Alert("naltrexone_taken", Severity.OVERRIDABLE_STOP,
                            f"Naltrexone already on the medication list ({_quoted(taking)}): LDN beside full-dose "
                            "naltrexone is a duplication. A pharmacist must check with the prescriber (has it been "
                            "stopped?) and record a reason before filling."))
    return alerts


def _condition_findings(conditions: Sequence[str]) -> list[Alert]:
    """The conditions list: liver disease (a stop a pharmacist clears), pregnancy or breastfeeding (a warning)."""
    alerts: list[Alert] = []
    conds = _entries(conditions)
    liver = [c for c in conds if _LIVER_RE.search(c) and not LIVER_EXCLUDE.search(c)]
    if liver:
        alerts.append(Alert("liver_disease", Severity.OVERRIDABLE_STOP,
                            f"Liver condition on file ({_quoted(liver)}): naltrexone is cleared by the liver. "
                            "A pharmacist must review and record a reason before filling."))
    pregnancy = [c for c in conds if _PREGNANCY_RE.search(c)]
    if pregnancy:
        alerts.append(Alert("pregnancy_breastfeeding", Severity.WARNING,
                            f"Pregnancy or breastfeeding ({_quoted(pregnancy)}): very little data exists on LDN "
                            "in pregnancy or breastfeeding; make sure the prescriber knows."))
    return alerts


def _dose_findings(max_dose_mg: Decimal | int | str, maintenance_dose_mg: Decimal | int | str | None, *,
                   spastic: bool) -> list[Alert]:
    """The plan's highest dose and its maintenance dose, each finding once."""
    top = to_decimal(max_dose_mg, "dose_mg")
    doses = [top]
    if maintenance_dose_mg is not None and to_decimal(maintenance_dose_mg, "dose_mg") != top:
        doses.append(to_decimal(maintenance_dose_mg, "dose_mg"))
    alerts: list[Alert] = []
    codes = set()
    for dose in sorted(doses, reverse=True):
        for alert in check_dose(dose, has_spasticity=spastic):
            if alert.code not in codes:
                codes.add(alert.code)
                alerts.append(alert)
    return alerts

