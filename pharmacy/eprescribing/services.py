"""E-prescribing use cases on its own tables: the intake queue (the message log and outbox are messages.py).

What reaches into other features (a prescription created or stopped, a renewal linked, a patient told) is in
workflows/eprescribing.py; this module only reads their rows to suggest matches and never writes them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer

from pharmacy.compounding.models import Formula
from pharmacy.core import audit
from pharmacy.core.actor import Actor
from pharmacy.core.context import now
from pharmacy.core.db import first_ids
from pharmacy.core.errors import Conflict, NotFound, ValidationFailed
from pharmacy.core.ids import valid_id
from pharmacy.core.roles import Permission
from pharmacy.core.rows import rows, scalar
from pharmacy.documents.models import Document
from pharmacy.eprescribing import medication_rules, rules
from pharmacy.eprescribing.models import ErxIntake, ErxMessage
from pharmacy.eprescribing.rules import (
    Direction,
    IntakeKind,
    IntakeState,
    MatchStatus,
    MessageState,
    Source,
    WrittenPrescription,
)
from pharmacy.eprescribing.settings import erx_settings
from pharmacy.extensions import db
from pharmacy.patients.models import Patient
from pharmacy.prescriptions.models import Prescriber, Prescription
from pharmacy.prescriptions.rules import format_amount

#: Sources whose entries are e-prescriptions (the Today page counts them apart from faxes).
ELECTRONIC = (Source.NCPDP, Source.FHIR)


# ---- the intake queue ---------------------------------------------------------------------------------------------


def formula_options() -> list[medication_rules.FormulaOption]:
    return [medication_rules.FormulaOption(id=f.id, form=f.form, strength_mg=f.strength_mg, name=f.name)
            for f in db.session.execute(sa.select(Formula).where(Formula.active.is_(True)).order_by(Formula.id)).scalars()]


def _candidates(written: rules.WrittenPatient) -> list[rules.PatientCandidate]:
    if written.date_of_birth is None:
        return []
    rows = db.session.execute(
        sa.select(Patient.id, Patient.first_name, Patient.last_name, Patient.date_of_birth, Patient.postal_code)
        .where(Patient.date_of_birth == written.date_of_birth).order_by(Patient.id).limit(50)
    ).all()
    return [rules.PatientCandidate(r.id, r.first_name, r.last_name, r.date_of_birth, r.postal_code) for r in rows]


def patients_already_on_file(intake: ErxIntake) -> tuple[int, ...]:
    """Patients on file with the entry's patient's name and date of birth (added since it arrived, perhaps from
    another entry for the same person)."""
    written = written_of(intake).patient
    return rules.same_name_and_birth(written, _candidates(written))


def rematch(intake: ErxIntake) -> None:
    """Match the patient again when the entry is opened, as long as nobody chose one: a patient added since it arrived
    (from another e-prescription for the same new patient) is suggested instead of "new patient" again."""
    if intake.state != IntakeState.WAITING or intake.patient_id is not None or intake.match_status == MatchStatus.CHOSEN:
        return
    if intake.kind not in (IntakeKind.NEW_RX, IntakeKind.RENEWAL) or not intake.written:
        return
    written = written_of(intake).patient
    match = rules.match_patient(written, _candidates(written))
    if (match.status, match.patient_id, tuple(match.candidate_ids)) == (
            intake.match_status, intake.patient_id, tuple(intake.candidate_ids or ())):
        return
    intake.match_status, intake.match_note = match.status, match.note[:240]
    intake.candidate_ids, intake.patient_id = list(match.candidate_ids), match.patient_id
    db.session.flush()


def _prescriber_by_npi(npi: str) -> Prescriber | None:
    if rules.npi_problem(npi):
        return None
    return db.session.execute(sa.select(Prescriber).where(Prescriber.npi == npi)).scalar_one_or_none()


def _suggest(intake: ErxIntake, written: WrittenPrescription) -> None:
    """Fill in the suggestions: the patient match, the prescriber by NPI, the formula and what did not map."""
    if intake.patient_id is None and intake.match_status != MatchStatus.CHOSEN:
        match = rules.match_patient(written.patient, _candidates(written.patient))
        intake.match_status, intake.match_note = match.status, match.note[:240]
        intake.candidate_ids = list(match.candidate_ids)
        intake.patient_id = match.patient_id
    if intake.prescriber_id is None and written.prescriber.npi:
        doc = _prescriber_by_npi(written.prescriber.npi)
        intake.prescriber_id = doc.id if doc else None
    mapping = medication_rules.map_medication(written.medication, formula_options())
    if intake.formula_id is None:
        intake.formula_id = mapping.formula_id
    intake.unmapped = mapping.unmapped
    p = written.patient
    intake.patient_name = (f"{p.last_name}, {p.first_name}" if p.last_name else intake.patient_name or None)
    intake.prescriber_name = written.prescriber.display_name[:170] or intake.prescriber_name


def open_intake(actor: Actor, *, source: Source, kind: IntakeKind, written: WrittenPrescription | None = None,
                message_row: ErxMessage | None = None, document_id: int | None = None, notice: str | None = None,
                replaces_id: int | None = None, renewal_id: int | None = None, prescription_id: int | None = None,
                patient_id: int | None = None, prescriber_id: int | None = None,
                state: IntakeState = IntakeState.WAITING) -> ErxIntake:
    """A new entry in the intake queue, with the match and mapping suggested (nothing else is created)."""
    if actor.scope != "ncpdp" and actor.kind != "system":
        audit.require(actor, Permission.ENTER_PRESCRIPTION, what="add prescriptions to the intake queue")
    intake = ErxIntake(source=source, kind=kind, state=state, message_row_id=message_row.id if message_row else None,
                       document_id=document_id, written=written.to_json() if written else {},
                       match_status=MatchStatus.CHOSEN if patient_id else MatchStatus.NONE, candidate_ids=[],
                       patient_id=patient_id, prescriber_id=prescriber_id, unmapped=[], notice=notice,
                       replaces_prescription_id=replaces_id, renewal_id=renewal_id, prescription_id=prescription_id,
                       received_at=now())
    if written is not None:
        _suggest(intake, written)
    if patient_id is not None:
        patient = db.session.get(Patient, patient_id)
        intake.patient_name = f"{patient.last_name}, {patient.first_name}" if patient else intake.patient_name
    if prescriber_id is not None:
        doc = db.session.get(Prescriber, prescriber_id)
        intake.prescriber_name = doc.display_name[:170] if doc else intake.prescriber_name
    db.session.add(intake)
    db.session.flush()
    if message_row is not None:
        message_row.intake_id = intake.id
        message_row.patient_id = intake.patient_id
    audit.record(actor, "erx.intake.open", patient_id=intake.patient_id, entity=("erx_intake", intake.id),
                 details={"source": source.value, "kind": kind.value, "match": intake.match_status.value})
    return intake


def get_intake(intake_id: int, *, lock: bool = False) -> ErxIntake:
    if not valid_id(intake_id):
        raise NotFound("No such intake entry.")
    stmt = sa.select(ErxIntake).where(ErxIntake.id == intake_id)
    if lock:
        stmt = stmt.with_for_update()
    intake = db.session.execute(stmt).scalar_one_or_none()
    if intake is None:
        raise NotFound("No such intake entry.")
    return intake


def waiting_entry(actor: Actor, intake_id: int, *, permission: Permission, what: str) -> ErxIntake:
    """An entry still waiting, locked, after checking the actor may act on it (before looking it up)."""
    audit.require(actor, permission, what=what)
    intake = get_intake(intake_id, lock=True)
    if intake.state != IntakeState.WAITING:
        raise Conflict(f"This entry was already {intake.state.value}.")
    return intake


@dataclass
class QueuePage:
    waiting: list[ErxIntake]
    decided: list[ErxIntake]
    refused: list[ErxMessage]
    outbound: list[ErxMessage]


def queue(actor: Actor, *, limit: int = 100) -> QueuePage:
    """The intake queue page: waiting entries oldest first, the latest decided ones, refused inbound messages and
    outbound messages still going or failed."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="see the e-prescription queue")
    waiting = list(db.session.execute(
        sa.select(ErxIntake).where(ErxIntake.state == IntakeState.WAITING)
        .order_by(ErxIntake.received_at, ErxIntake.id).limit(limit)
    ).scalars())
    decided = list(db.session.execute(
        sa.select(ErxIntake).where(ErxIntake.state != IntakeState.WAITING)
        .order_by(ErxIntake.decided_at.desc(), ErxIntake.id.desc()).limit(20)
    ).scalars())
    refused = list(db.session.execute(
        sa.select(ErxMessage).where(ErxMessage.direction == Direction.INBOUND, ErxMessage.state == MessageState.REFUSED)
        .options(defer(ErxMessage.body), defer(ErxMessage.answer_body))
        .order_by(ErxMessage.id.desc()).limit(20)
    ).scalars())
    outbound = list(db.session.execute(
        sa.select(ErxMessage).where(ErxMessage.direction == Direction.OUTBOUND)
        .options(defer(ErxMessage.body), defer(ErxMessage.answer_body))
        .order_by(ErxMessage.id.desc()).limit(20)
    ).scalars())
    audit.record(actor, "erx.queue.view", details={"waiting": len(waiting)})
    return QueuePage(waiting=waiting, decided=decided, refused=refused, outbound=outbound)


@dataclass
class Review:
    """Everything the review page shows beside the form."""

    intake: ErxIntake
    written: WrittenPrescription
    mapping: medication_rules.MedicationMapping
    form: dict[str, str]
    patient: Patient | None
    prescriber: Prescriber | None
    candidates: list[Patient]
    formulas: list[Formula]
    prescribers: list[Prescriber]
    messages: list[ErxMessage]
    document: Document | None
    replaces: Prescription | None
    prescription: Prescription | None
    can_clarify: bool
    npi_problem: str | None = None
    prescriber_on_file_with_npi: bool = False
    alerts: list[str] = field(default_factory=list)


def review(actor: Actor, intake_id: int) -> Review:
    """The review page of one entry: the prescription as written, the suggestions, and the form to accept it.

    Opening it is reading the patient's prescription: audited (with the patient when known)."""
    audit.require(actor, Permission.VIEW_CLINICAL, what="review e-prescriptions")
    intake = get_intake(intake_id)
    rematch(intake)
    written = WrittenPrescription.from_json(intake.written)
    mapping = medication_rules.map_medication(written.medication, formula_options())
    form = medication_rules.intake_form_values(mapping)
    replaces = db.session.get(Prescription, intake.replaces_prescription_id) if intake.replaces_prescription_id else None
    if replaces is not None:  # a renewal: what the prescriber did not restate stays as it was
        form = {**_form_of_prescription(replaces), **{k: v for k, v in form.items() if v}}
    form.update({"patient_id": str(intake.patient_id or ""), "prescriber_id": str(intake.prescriber_id or ""),
                 "formula_id": str(intake.formula_id or form.get("formula_id") or "")})
    candidates = [p for p in (db.session.get(Patient, i) for i in intake.candidate_ids or []) if p is not None]
    document = None
    if intake.document_id:
        document = db.session.execute(
            sa.select(Document).where(Document.id == intake.document_id).options(defer(Document.data))
        ).scalar_one_or_none()
    messages = list(db.session.execute(
        sa.select(ErxMessage).where(sa.or_(ErxMessage.intake_id == intake.id, ErxMessage.id == intake.message_row_id))
        .options(defer(ErxMessage.answer_body)).order_by(ErxMessage.id)
    ).scalars())
    source_message = next((m for m in messages if m.id == intake.message_row_id), None)
    can_clarify = (intake.source == Source.NCPDP and intake.kind == IntakeKind.NEW_RX and intake.state ==
                   IntakeState.WAITING and source_message is not None and bool(source_message.sender)
                   and erx_settings().intermediary_url is not None)
    npi = written.prescriber.npi
    audit.record(actor, "erx.intake.view", patient_id=intake.patient_id, entity=("erx_intake", intake.id))
    return Review(
        intake=intake, written=written, mapping=mapping, form=form,
        patient=db.session.get(Patient, intake.patient_id) if intake.patient_id else None,
        prescriber=db.session.get(Prescriber, intake.prescriber_id) if intake.prescriber_id else None,
        candidates=candidates,
        formulas=list(db.session.execute(sa.select(Formula).where(Formula.active.is_(True))
                                         .order_by(Formula.form, Formula.strength_mg)).scalars()),
        prescribers=list(db.session.execute(sa.select(Prescriber).order_by(Prescriber.last_name, Prescriber.first_name)
                                            .limit(500)).scalars()),
        messages=messages, document=document, replaces=replaces,
        prescription=db.session.get(Prescription, intake.prescription_id) if intake.prescription_id else None,
        can_clarify=can_clarify, npi_problem=rules.npi_problem(npi) if npi else None,
        prescriber_on_file_with_npi=bool(npi) and _prescriber_by_npi(npi) is not None,
    )


def _form_of_prescription(rx: Prescription) -> dict[str, str]:

    return {"formula_id": str(rx.formula_id), "dose_mg": format_amount(rx.dose_mg),
            "dosing_time": rx.dosing_time.value, "quantity": format_amount(rx.quantity),
            "days_supply": str(rx.days_supply), "refills_authorized": str(rx.refills_authorized or 0),
            "directions": rx.directions, "indication": rx.indication, "indication_code": rx.indication_code}


def choose_patient(actor: Actor, intake_id: int, patient_id: int) -> ErxIntake:
    """The pharmacist says whose prescription this is (a candidate, another patient found by search, or a patient
    just added from the message). Only the entry changes: the patient's record is not touched."""
    intake = waiting_entry(actor, intake_id, permission=Permission.ENTER_PRESCRIPTION, what="match e-prescriptions")
    patient = db.session.get(Patient, patient_id) if valid_id(patient_id) else None
    if patient is None:
        raise ValidationFailed("Choose a patient.", fields={"patient_id": "Unknown patient."})
    intake.patient_id, intake.match_status = patient.id, MatchStatus.CHOSEN
    intake.patient_name = f"{patient.last_name}, {patient.first_name}"
    if intake.message_row_id:
        db.session.execute(sa.update(ErxMessage).where(ErxMessage.id == intake.message_row_id)
                           .values(patient_id=patient.id))
    db.session.flush()
    audit.record(actor, "erx.intake.match", patient_id=patient.id, entity=("erx_intake", intake.id))
    return intake


def choose_prescriber(actor: Actor, intake_id: int, prescriber_id: int) -> ErxIntake:
    intake = waiting_entry(actor, intake_id, permission=Permission.ENTER_PRESCRIPTION, what="match e-prescriptions")
    doc = db.session.get(Prescriber, prescriber_id) if valid_id(prescriber_id) else None
    if doc is None:
        raise ValidationFailed("Choose a prescriber.", fields={"prescriber_id": "Unknown prescriber."})
    intake.prescriber_id, intake.prescriber_name = doc.id, doc.display_name[:170]
    db.session.flush()
    audit.record(actor, "erx.intake.prescriber", patient_id=intake.patient_id, entity=("erx_intake", intake.id))
    return intake


def written_of(intake: ErxIntake) -> WrittenPrescription:
    return WrittenPrescription.from_json(intake.written)


def patient_values(intake: ErxIntake) -> dict[str, object]:
    """A new patient's details as the prescription gives them (for the patients' intake schema to check)."""
    p = written_of(intake).patient
    return {k: v for k, v in {
        "first_name": p.first_name, "last_name": p.last_name, "date_of_birth": p.date_of_birth.isoformat()
        if p.date_of_birth else "", "phone": p.phone, "email": p.email, "address_line1": p.address_line1,
        "address_line2": p.address_line2, "city": p.city, "state": p.state, "postal_code": p.postal_code,
    }.items() if v}


def prescriber_values(intake: ErxIntake) -> dict[str, object]:
    doc = written_of(intake).prescriber
    address = ", ".join(x for x in (doc.clinic_name, doc.address_line1, doc.city, f"{doc.state} {doc.postal_code}".strip())
                        if x)
    return {k: v for k, v in {
        "first_name": doc.first_name, "last_name": doc.last_name, "credentials": doc.suffix, "npi": doc.npi,
        "phone": doc.phone, "fax": doc.fax, "email": doc.email, "address": address[:240],
    }.items() if v}


def mark_accepted(actor: Actor, intake: ErxIntake, prescription: Prescription) -> None:
    intake.state, intake.prescription_id = IntakeState.ACCEPTED, prescription.id
    intake.patient_id = prescription.patient_id
    intake.decided_at, intake.decided_by_id = now(), actor.user_id
    db.session.flush()
    audit.record(actor, "erx.intake.accept", patient_id=prescription.patient_id, entity=("erx_intake", intake.id),
                 details={"prescription": prescription.id, "source": intake.source.value})


def mark_rejected(actor: Actor, intake: ErxIntake, reason: str) -> None:
    intake.state, intake.decision_reason = IntakeState.REJECTED, reason[:400]
    intake.decided_at, intake.decided_by_id = now(), actor.user_id
    db.session.flush()
    # The reason stays on the entry (and goes to the sender); the audit trail keeps ids only.
    audit.record(actor, "erx.intake.reject", patient_id=intake.patient_id, entity=("erx_intake", intake.id),
                 details={"source": intake.source.value})


def mark_done(actor: Actor, intake_id: int, note: str | None = None) -> ErxIntake:
    """A notice (a cancellation, a denied renewal) dealt with by the pharmacist."""
    intake = waiting_entry(actor, intake_id, permission=Permission.MANAGE_PRESCRIPTION, what="close queue notices")
    if intake.kind not in (IntakeKind.CANCEL_RX, IntakeKind.RENEWAL_DENIED):
        raise Conflict("A prescription is accepted or rejected, not marked done.")
    intake.state, intake.decision_reason = IntakeState.DONE, (note or "").strip()[:400] or None
    intake.decided_at, intake.decided_by_id = now(), actor.user_id
    db.session.flush()
    audit.record(actor, "erx.intake.done", patient_id=intake.patient_id, entity=("erx_intake", intake.id))
    return intake


def note_clarification(intake: ErxIntake, text: str, medication: rules.WrittenMedication | None = None) -> None:
    """The prescriber answered a clarification: say so on the entry, and take their medication if they gave one."""
    intake.clarification = text[:400]
    if medication is not None and medication.description:
        written = written_of(intake)
        written.medication = medication
        intake.written = written.to_json()
        intake.formula_id = None
        _suggest(intake, written)
    db.session.flush()


def intake_for_order_number(npi: str, prescriber_order_number: str) -> ErxIntake | None:
    """The e-prescription a prescriber's order number refers to (the latest, if sent more than once)."""
    if not prescriber_order_number:
        return None
    rows = db.session.execute(
        sa.select(ErxIntake).join(ErxMessage, ErxMessage.id == ErxIntake.message_row_id)
        .where(ErxIntake.source == Source.NCPDP, ErxIntake.kind == IntakeKind.NEW_RX,
               ErxMessage.prescriber_order_number == prescriber_order_number)
        .order_by(ErxIntake.id.desc())
    ).scalars().all()
    return next((r for r in rows if written_of(r).prescriber.npi == npi), None)


def intake_of_prescription(prescription_id: int) -> ErxIntake | None:
    """The accepted e-prescription a prescription came from (for its prescriber order number)."""
    return db.session.execute(
        sa.select(ErxIntake).where(ErxIntake.prescription_id == prescription_id,
                                   ErxIntake.state == IntakeState.ACCEPTED, ErxIntake.source == Source.NCPDP)
        .order_by(ErxIntake.id.desc())
    ).scalars().first()


# ---- the Today page -----------------------------------------------------------------------------------------------


@dataclass
class TodayBlock:
    """The Today page's e-prescription block: counts and the oldest few of each queue (names only)."""

    prescriptions_waiting: int = 0
    prescriptions: list[ErxIntake] = field(default_factory=list)
    documents_waiting: int = 0
    documents: list[ErxIntake] = field(default_factory=list)
    notices_waiting: int = 0
    failed_messages: int = 0


class _TodayStatements:
    """The Today block's statements, built once per process (the page is opened all day)."""

    def __init__(self, limit: int) -> None:
        self.counts = (sa.select(ErxIntake.source, ErxIntake.kind, sa.func.count())
                       .where(ErxIntake.state == IntakeState.WAITING).group_by(ErxIntake.source, ErxIntake.kind))
        prescriptions = (IntakeKind.NEW_RX, IntakeKind.RENEWAL)

        def first(sources: tuple[Source, ...]) -> sa.Select[Any]:
            where = sa.and_(ErxIntake.state == IntakeState.WAITING, ErxIntake.source.in_(sources),
                            ErxIntake.kind.in_(prescriptions))
            ids = first_ids(ErxIntake.id, where, (ErxIntake.received_at, ErxIntake.id), limit)
            return sa.select(ErxIntake).join(ids, ids.c.id == ErxIntake.id).order_by(ErxIntake.received_at,
                                                                                      ErxIntake.id)

        self.first_prescriptions = first(tuple(ELECTRONIC))
        self.first_documents = first((Source.FAX,))
        self.failed_messages = sa.select(sa.func.count()).select_from(ErxMessage).where(
            ErxMessage.state == MessageState.FAILED)


@functools.cache
def _today_statements(limit: int) -> _TodayStatements:
    return _TodayStatements(limit)


def today_block(actor: Actor, *, limit: int = 5) -> TodayBlock | None:
    """For the Today page (dashboard): waiting e-prescriptions (patient, prescriber) and unprocessed faxes.

    At most four statements whatever the queue's length: one grouped count, two short lists read along
    ix_erx_intake_state_received (only when the count says they have rows), one count of failed outbound
    messages. None for roles without clinical access."""
    if not actor.can(Permission.VIEW_CLINICAL):
        return None
    block = TodayBlock()
    q = _today_statements(limit)
    for source, kind, n in rows(q.counts):
        if kind in (IntakeKind.CANCEL_RX, IntakeKind.RENEWAL_DENIED):
            block.notices_waiting += int(n)
        elif source == Source.FAX:
            block.documents_waiting += int(n)
        else:
            block.prescriptions_waiting += int(n)
    # The lists only when the counts say they have rows (most visits: none waiting, no statement).
    if block.prescriptions_waiting:
        block.prescriptions.extend(db.session.execute(q.first_prescriptions).scalars())
    if block.documents_waiting:
        block.documents.extend(db.session.execute(q.first_documents).scalars())
    block.failed_messages = int(scalar(q.failed_messages))
    return block

