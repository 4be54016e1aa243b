"""POST /ncpdp/script: who may post, and what every kind of bad input gets back — always a SCRIPT answer the sender
can read, never a 500, and nothing half-created. Fuzzed (deterministically) with random bytes and mangled messages."""
from __future__ import annotations

import copy
import os
import random
import xml.etree.ElementTree as ET  # building test documents only
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pharmacy.core import services as core_services
from pharmacy.core.actor import Actor
from pharmacy.core.errors import ValidationFailed
from pharmacy.core.roles import Role
from pharmacy.eprescribing import ncpdp
from pharmacy.eprescribing.models import ErxIntake, ErxMessage, ErxPrescriberAddress
from pharmacy.eprescribing.rules import MatchStatus, MessageState
from pharmacy.extensions import db
from pharmacy.prescriptions.models import Prescription
from tests import factories
from tests.conftest import login
from tests.erx_support import api_token, fixture, ncpdp_token

# make test: a fixed, derandomized sample; make fuzz (HYPOTHESIS_PROFILE=fuzz): the wide random search.
FUZZ_EXAMPLES = 500 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 60

@pytest.fixture
def token(app: Any) -> str:
    return ncpdp_token(app)


def post(client: Any, body: bytes, token: str | None, content_type: str = "application/xml") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/ncpdp/script", data=body, headers=headers, content_type=content_type)
    assert response.mimetype == "application/xml"
    return response.status_code, ncpdp.parse(response.get_data())


def counts(app: Any) -> tuple[int, int, int]:
    with app.app_context():
        return tuple(db.session.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                     for t in (ErxMessage, ErxIntake, Prescription))


def test_only_an_ncpdp_token_may_post(app, client, staff, token) -> None:
    status, answer = post(client, fixture("new_rx_capsules.xml"), None)
    assert status == 401 and answer.kind == "Error"
    for scope in ("api", "fhir"):
        status, answer = post(client, fixture("new_rx_capsules.xml"), api_token(app, staff["pharmacist"], scope))
        assert status == 401 and answer.kind == "Error"
    assert counts(app) == (0, 0, 0)
    status, answer = post(client, fixture("new_rx_capsules.xml"), token)
    assert status == 200 and (answer.kind, answer.answer.code) == ("Status", "010")


def test_an_ncpdp_token_works_nowhere_else(app, client, token) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/patients", headers=headers).status_code == 401
    assert client.get("/fhir/Patient", headers=headers).status_code == 401


def test_an_ncpdp_token_is_only_for_a_pharmacist_account(app, staff) -> None:
    with app.test_request_context("/"):
        console = Actor(kind="staff", role=Role.ADMIN)
        with pytest.raises(ValidationFailed, match="not created"):
            core_services.issue_token(console, staff["technician"].id, "erx", scope="ncpdp")
        with pytest.raises(ValidationFailed):
            core_services.issue_token(console, staff["pharmacist"].id, "erx", scope="everything")


def test_wrong_content_type_and_too_large(client, token) -> None:
    status, answer = post(client, fixture("new_rx_capsules.xml"), token, content_type="application/json")
    assert status == 415 and "application/xml" in answer.answer.description
    status, answer = post(client, b"<Message>" + b" " * (ncpdp.MAX_MESSAGE_BYTES + 10) + b"</Message>", token)
    assert status == 413 and answer.kind == "Error"


@pytest.mark.parametrize(("name", "words"), [
    ("hostile_xxe.xml", "DTD"), ("hostile_billion_laughs.xml", "DTD"),
    ("unknown_type.xml", "Census messages are not supported"),
])
def test_hostile_and_unknown_messages_are_refused_kept_and_listed(app, client, staff, token, name, words) -> None:
    status, answer = post(client, fixture(name), token)
    assert status == 200 and (answer.kind, answer.answer.code) == ("Error", "900")
    assert words in answer.answer.description
    assert counts(app)[1:] == (0, 0)  # no queue entry, no prescription
    with app.app_context():
        row = db.session.execute(sa.select(ErxMessage)).scalar_one()
        assert row.state == MessageState.REFUSED and row.body == fixture(name) and row.answer_code == "900"
    login(client, staff["pharmacist"])
    page = client.get("/eprescriptions").get_data(as_text=True)
    assert "Messages refused on arrival" in page and words.split()[0] in page
    again = client.post("/ncpdp/script", data=fixture(name), content_type="application/xml",
                        headers={"Authorization": f"Bearer {token}"})
    assert counts(app)[0] in (1, 2)  # an unreadable message has no MessageID to recognise it by; a readable one does
    assert ncpdp.parse(again.get_data()).answer.code == "900"


def test_missing_fields_are_named_and_nothing_is_created(app, client, token) -> None:
    _status, answer = post(client, fixture("new_rx_capsules.xml", LAST_NAME="", WRITTEN_DATE=""), token)
    assert answer.kind == "Error" and "Patient/HumanPatient/Name/LastName" in answer.answer.description
    assert "MedicationPrescribed/WrittenDate/Date" in answer.answer.description
    assert answer.header.relates_to == "NEWRX-0001"
    assert counts(app)[1:] == (0, 0)
    # The same (refused) message again: the same answer, still one row.
    again = client.post("/ncpdp/script", data=fixture("new_rx_capsules.xml", LAST_NAME="", WRITTEN_DATE=""),
                        content_type="application/xml", headers={"Authorization": f"Bearer {token}"})
    assert ncpdp.parse(again.get_data()).answer.description == answer.answer.description
    assert counts(app)[0] == 1


def test_an_npi_with_a_wrong_check_digit_is_refused(app, client, token) -> None:
    _status, answer = post(client, fixture("new_rx_capsules.xml", NPI="1987654321"), token)
    assert answer.kind == "Error" and "check digit" in answer.answer.description
    with app.app_context():
        assert db.session.execute(sa.select(ErxPrescriberAddress)).first() is None
        assert db.session.execute(sa.select(ErxIntake)).first() is None
        assert db.session.execute(sa.select(ErxMessage)).scalar_one().state == MessageState.REFUSED


def test_an_unmatched_patient_is_taken_in_as_a_new_patient_for_the_pharmacist(app, client, token) -> None:
    _status, answer = post(client, fixture("new_rx_capsules.xml", LAST_NAME="Stranger"), token)
    assert (answer.kind, answer.answer.code) == ("Status", "010")
    with app.app_context():
        intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
        assert intake.match_status == MatchStatus.NONE and intake.patient_id is None
        assert intake.patient_name == "Stranger, Margaret"


def test_an_ambiguous_patient_is_never_merged(app, client, staff, token) -> None:
    with app.test_request_context("/"):
        ph = factories.actor(staff["pharmacist"])
        a = factories.patient(ph)
        b = factories.patient(ph, email="twin@example.com")  # same name, birth date and ZIP
        db.session.commit()
        ids = sorted([a.id, b.id])
    post(client, fixture("new_rx_capsules.xml"), token)
    with app.app_context():
        intake = db.session.execute(sa.select(ErxIntake)).scalar_one()
        assert (intake.match_status, intake.patient_id, sorted(intake.candidate_ids)) == (
            MatchStatus.AMBIGUOUS, None, ids)


def test_values_at_the_edges_of_their_columns_are_taken(app, client, token) -> None:
    raw = fixture("new_rx_capsules.xml").replace(b'<From Qualifier="D">6811234567001</From>',
                                                 b'<From Qualifier="QUALIFIERX">' + b"S" * 90 + b"</From>")
    raw = raw.replace(b"<MessageID>NEWRX-0001</MessageID>", b"<MessageID>" + b"M" * 90 + b"</MessageID>")
    raw = raw.replace(b"<LastName>Okafor</LastName>", b"<LastName>" + b"O" * 120 + b"</LastName>")
    _status, answer = post(client, raw, token)
    assert (answer.kind, answer.answer.code) == ("Status", "010")
    with app.app_context():
        address = db.session.execute(sa.select(ErxPrescriberAddress)).scalar_one()
        assert (address.address, address.qualifier) == ("S" * 64, "QUAL")


def test_responses_that_relate_to_nothing_we_sent_are_refused(app, client, token) -> None:
    _status, answer = post(client, fixture("rx_renewal_response_approved.xml", MESSAGE_ID="R-1", RELATES_TO="nope"),
                          token)
    assert answer.kind == "Error" and "matches no renewal request" in answer.answer.description
    assert counts(app)[1:] == (0, 0)


def test_transactions_a_pharmacy_sends_are_not_accepted_from_outside(app, client, token) -> None:
    h = ncpdp.Header(to="1234567", sender="X", message_id="OUT-1", relates_to="Y", sent_time="2026-11-23T00:00:00Z")
    body = ncpdp.response_message("CancelRxResponse", h, ncpdp.PrescriberResponse(outcome="approved"))
    _status, answer = post(client, body, token)
    assert answer.kind == "Error" and "sent by a pharmacy" in answer.answer.description


# ---- fuzzing ---------------------------------------------------------------------------------------------------

SEEDS = [fixture("new_rx_capsules.xml"), fixture("new_rx_sublingual.xml"), fixture("cancel_rx.xml"),
         fixture("rx_renewal_response_approved.xml", MESSAGE_ID="R", RELATES_TO="X")]
nasty = st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
                  st.sampled_from(["", " ", "0", "-1", "99999999999999999999", "2026-02-30", "\u202e", "<b>", "&amp;",
                                   "A" * 300, "1987654321"]))


@st.composite
def mangled(draw: Any) -> bytes:
    """A real message with elements dropped, duplicated or their text replaced."""
    root = ET.fromstring(draw(st.sampled_from(SEEDS)))  # noqa: S314 - our own fixtures
    elements = list(root.iter())
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 6))):
        target = rng.choice(elements)
        action = draw(st.sampled_from(["text", "drop", "duplicate"]))
        parent = next((p for p in root.iter() if target in list(p)), None)
        if action == "text":
            target.text = draw(nasty)
        elif parent is not None and action == "drop":
            parent.remove(target)
        elif parent is not None:
            parent.append(copy.deepcopy(target))
    return ET.tostring(root, encoding="utf-8")


@settings(max_examples=FUZZ_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=400), mangled()))
def test_fuzz_every_body_gets_a_script_answer_and_nothing_half_created(app, client, token, body) -> None:
    response = client.post("/ncpdp/script", data=body, content_type="application/xml",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    answer = ncpdp.parse(response.get_data())
    assert answer.kind in ("Status", "Error") and answer.answer.code
    with app.app_context():
        # Every queue entry points at its message; no prescription is ever created by a message.
        orphans = db.session.execute(sa.select(ErxIntake.id).where(ErxIntake.message_row_id.is_(None))).all()
        assert orphans == []
        assert db.session.execute(sa.select(sa.func.count()).select_from(Prescription)).scalar_one() == 0
        refused_with_entry = db.session.execute(
            sa.select(ErxMessage.id).join(ErxIntake, ErxIntake.message_row_id == ErxMessage.id)
            .where(ErxMessage.state == MessageState.REFUSED)).all()
        assert refused_with_entry == []
