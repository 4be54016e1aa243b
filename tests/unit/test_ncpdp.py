"""SCRIPT 2017071: the fixtures read as written, hostile documents are refused before anything expands, and every
message the pharmacy writes reads back with its own parser, field for field."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.eprescribing import ncpdp
from pharmacy.eprescribing.rules import WrittenMedication, WrittenPatient, WrittenPrescriber, WrittenPrescription
from tests.erx_support import OKAFOR_NPI, fixture


def test_new_rx_fixture_reads_patient_prescriber_and_medication_as_written() -> None:
    m = ncpdp.parse(fixture("new_rx_capsules.xml"))
    assert m.kind == "NewRx"
    h = m.header
    assert (h.to, h.to_qualifier, h.sender, h.sender_qualifier, h.message_id, h.prescriber_order_number) == (
        "1234567", "P", "6811234567001", "D", "NEWRX-0001", "PON-7781")
    rx = m.prescription
    assert (rx.patient.first_name, rx.patient.last_name, rx.patient.date_of_birth, rx.patient.gender) == (
        "Margaret", "Ellison", date(1968, 4, 12), "F")
    assert (rx.patient.address_line1, rx.patient.city, rx.patient.state, rx.patient.postal_code, rx.patient.phone) == (
        "14 Oak Lane", "Springfield", "IL", "62704", "2175550101")
    doc = rx.prescriber
    assert (doc.npi, doc.first_name, doc.last_name, doc.suffix, doc.clinic_name, doc.phone, doc.fax) == (
        OKAFOR_NPI, "Adaeze", "Okafor", "MD", "Lakeside Neurology", "2175550190", "2175550191")
    med = rx.medication
    assert med.description.startswith("Naltrexone HCl 4.5 mg capsule")
    assert (med.quantity, med.quantity_unit, med.days_supply, med.refills, med.substitutions) == (
        "30", "C48480", "30", "5", "0")
    assert (med.written_date, med.diagnoses, med.sig) == (
        date(2026, 11, 20), ["G35"], "Take 1 capsule (4.5 mg) by mouth at bedtime.")
    assert med.note == "Fillers must not be slow-release."
    assert rx.prescriber_order_number == "PON-7781"


def test_a_namespaced_message_with_the_short_version_spelling_reads_the_same() -> None:
    m = ncpdp.parse(fixture("new_rx_sublingual.xml"))
    assert m.kind == "NewRx" and m.prescription.medication.quantity_unit == "C28254"
    assert m.prescription.prescriber.npi == "1245319599" and m.header.sender_qualifier == "C"


@pytest.mark.parametrize("name", ["hostile_xxe.xml", "hostile_billion_laughs.xml"])
def test_hostile_documents_are_refused_without_expanding_anything(name: str) -> None:
    with pytest.raises(ncpdp.ScriptError) as err:
        ncpdp.parse(fixture(name))
    assert err.value.code == "900" and "DTD" in err.value.description


@pytest.mark.parametrize(("raw", "words"), [
    (b"", "empty"), (b"   ", "empty"), (b"not xml at all", "not well-formed"), (b"<Message><Header>", "not well-formed"),
    (b"<Other/>", "root element must be Message"),
    (b"<Message><Header><From>x</From></Header><Body><NewRx/></Body></Message>", "no MessageID"),
    (b"<Message><Header><From>x</From><MessageID>1</MessageID></Header><Body/></Message>", "exactly one"),
    (b'<Message TransportVersion="10.6"><Header><MessageID>1</MessageID></Header></Message>', "version 10.6"),
    (b"<?xml version='1.0' encoding='latin-1'?><Message>\xe9</Message>", "Message"),
])
def test_unreadable_messages_say_why(raw: bytes, words: str) -> None:
    with pytest.raises(ncpdp.ScriptError) as err:
        ncpdp.parse(raw)
    assert words in err.value.description


def test_an_unknown_transaction_is_refused_by_name_keeping_the_header() -> None:
    with pytest.raises(ncpdp.ScriptError) as err:
        ncpdp.parse(fixture("unknown_type.xml"))
    assert err.value.kind == "Census" and "Census messages are not supported" in err.value.description
    assert err.value.header.message_id == "CENSUS-1"


def test_missing_required_fields_are_listed_as_paths() -> None:
    raw = fixture("new_rx_capsules.xml", BIRTH_DATE="", NPI="")
    with pytest.raises(ncpdp.ScriptError) as err:
        ncpdp.parse(raw)
    assert "Patient/HumanPatient/DateOfBirth/Date" in err.value.description
    assert "Prescriber/NonVeterinarian/Identification/NPI" in err.value.description


def test_renewal_responses_read_their_outcome_fail_safe() -> None:
    approved = ncpdp.parse(fixture("rx_renewal_response_approved.xml", MESSAGE_ID="R1", RELATES_TO="abc"))
    assert approved.response.approved and approved.header.relates_to == "abc"
    assert approved.prescription.medication.refills == "5"
    denied = ncpdp.parse(fixture("rx_renewal_response_denied.xml", MESSAGE_ID="R2", RELATES_TO="abc"))
    assert denied.response.denied and denied.response.reason_code == "AA"
    both = (b"<Message><Header><From>x</From><MessageID>3</MessageID><RelatesToMessageID>a</RelatesToMessageID>"
            b"</Header><Body><RxRenewalResponse><Response><Approved/><Denied/></Response></RxRenewalResponse></Body>"
            b"</Message>")
    assert ncpdp.parse(both).response.outcome == "denied"  # a denial is never masked by an approval


# ---- what the pharmacy writes reads back -----------------------------------------------------------------------

PATIENT = WrittenPatient(first_name="Margaret", last_name="Ellison", date_of_birth=date(1968, 4, 12), gender="F",
                         address_line1="14 Oak Lane", city="Springfield", state="IL", postal_code="62704",
                         phone="2175550101")
DOCTOR = WrittenPrescriber(npi=OKAFOR_NPI, first_name="Adaeze", last_name="Okafor", suffix="MD",
                           clinic_name="Lakeside Neurology", phone="2175550190", fax="2175550191")
MED = WrittenMedication(description="Naltrexone 4.5 mg capsules (compounded LDN)", strength_value="4.5",
                        quantity="30", quantity_unit="C48480", days_supply="30", refills="0",
                        sig="Take 1 capsule (4.5 mg) by mouth at bedtime.", substitutions="0", diagnoses=["G35"],
                        written_date=date(2026, 1, 5))
PHARMACY = ncpdp.Pharmacy(ncpdp_id="1234567", npi="1234567893", name="Riverside Compounding Pharmacy",
                          address_line1="100 River Street", city="Springfield", state="IL", postal_code="62701",
                          phone="2175550100")


def header(**kw: str) -> ncpdp.Header:
    values = {"to": "6811234567001", "to_qualifier": "D", "sender": "1234567", "sender_qualifier": "P",
              "message_id": "0123456789abcdef0123456789abcdef", "sent_time": "2026-11-23T15:00:00.00Z", **kw}
    return ncpdp.Header(**values)


def test_every_outbound_message_reads_back_with_our_parser() -> None:
    h = header(relates_to="NEWRX-0001", prescriber_order_number="PON-7781", rx_reference_number="RX000012")
    built = {
        "RxRenewalRequest": ncpdp.rx_renewal_request(h, patient=PATIENT, pharmacy=PHARMACY, prescriber=DOCTOR,
                                                     dispensed=MED, prescribed=MED, last_fill="2026-10-30"),
        "RxChangeRequest": ncpdp.rx_change_request(h, request_code="S", patient=PATIENT, pharmacy=PHARMACY,
                                                   prescriber=DOCTOR, prescribed=MED),
        "CancelRxResponse": ncpdp.response_message("CancelRxResponse", h, ncpdp.PrescriberResponse(
            outcome="approved", note="RX000012 is stopped.")),
        "Status": ncpdp.answer_message("Status", h, ncpdp.Answer(code="010", description="Received")),
        "Error": ncpdp.answer_message("Error", h, ncpdp.Answer(code="900", description="Not LDN")),
        "Verify": ncpdp.answer_message("Verify", h, ncpdp.Answer(code="010", description="Accepted by the pharmacy.")),
    }
    assert set(built) == set(ncpdp.OUTBOUND_KINDS)
    for kind, raw in built.items():
        m = ncpdp.parse(raw)
        assert m.kind == kind and m.header == h
        if kind in ("RxRenewalRequest", "RxChangeRequest"):
            assert m.prescription.patient == PATIENT
            assert m.prescription.prescriber == DOCTOR
            assert m.prescription.medication == MED
        if kind == "RxRenewalRequest":
            assert m.dispensed == MED
        if kind == "RxChangeRequest":
            assert m.request_code == "S"
        if kind in ("Status", "Error", "Verify"):
            assert m.answer.code in ("010", "900")
    assert ncpdp.parse(built["CancelRxResponse"]).response.note == "RX000012 is stopped."


def test_inbound_kinds_built_for_the_tests_read_back_too() -> None:
    rx = WrittenPrescription(patient=PATIENT, prescriber=DOCTOR, medication=MED, prescriber_order_number="PON-1")
    h = header(prescriber_order_number="PON-1")
    for build in (ncpdp.new_rx(h, rx, PHARMACY), ncpdp.cancel_rx(h, rx)):
        assert ncpdp.parse(build).prescription == rx


# Text a person could type (no control characters, surrogates or noncharacters such as U+FFFE: XML cannot carry
# them, and the writer drops them — tested below).
text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=40).map(
    lambda s: " ".join(s.split()))


@given(first=text.filter(bool), last=text.filter(bool), sig=text.filter(bool), note=text, description=text.filter(bool),
       message_id=st.text(alphabet="ABCDEF0123456789-", min_size=1, max_size=35))
def test_any_text_survives_a_round_trip(first, last, sig, note, description, message_id) -> None:
    patient = WrittenPatient(first_name=first, last_name=last, date_of_birth=date(1970, 1, 1), gender="U")
    med = WrittenMedication(description=description, quantity="30", sig=sig, note=note, written_date=date(2026, 1, 1),
                            substitutions="0")
    rx = WrittenPrescription(patient=patient, prescriber=DOCTOR, medication=med)
    back = ncpdp.parse(ncpdp.new_rx(header(message_id=message_id), rx)).prescription
    assert (back.patient.first_name, back.patient.last_name, back.medication.sig, back.medication.note,
            back.medication.description) == (first[:80], last[:80], sig, note, description[:200])


@given(st.binary(max_size=600))
def test_arbitrary_bytes_either_read_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        ncpdp.parse(raw)
    except ncpdp.ScriptError as err:
        assert err.code in ("600", "601", "602", "900") and err.description


def test_characters_xml_cannot_carry_are_dropped_not_sent() -> None:
    """A note pasted with U+FFFE or a control character: the message stays well-formed (the intermediary would refuse
    it whole), and the rest of the text goes through."""
    med = WrittenMedication(description="Naltrexone 4.5 mg capsule\ufffe", quantity="30", sig="Take 1\x07 at bedtime",
                            note="Call\uffff me", written_date=date(2026, 1, 1), substitutions="0")
    rx = WrittenPrescription(patient=WrittenPatient(first_name="Ann", last_name="Lee", date_of_birth=date(1970, 1, 1),
                                                    gender="F"), prescriber=DOCTOR, medication=med)
    back = ncpdp.parse(ncpdp.new_rx(header(message_id="M-1"), rx)).prescription
    assert (back.medication.description, back.medication.sig, back.medication.note) == (
        "Naltrexone 4.5 mg capsule", "Take 1 at bedtime", "Call me")
