"""Routes of e-prescribing, documents (faxes) and FHIR.

The queue pages need clinical access (admins are refused: minimum necessary); accepting and rejecting need a
pharmacist. Ids that do not exist answer 404 once the role is allowed, so "missing" here means "got through the
permission check". FHIR reads need an API token (anonymous: 401); /fhir/metadata is public. The NCPDP endpoint
takes only an "ncpdp" token: every other visitor — staff API tokens included — gets 401.
"""
from tests.web.route_matrix import PRINCIPALS, Route, api_route, public, staff_page

NOPE = 999999

ROUTES: list[Route] = [
    staff_page("eprescribing.queue", lambda w: "/eprescriptions", admin="forbidden"),
    staff_page("eprescribing.review", lambda w: f"/eprescriptions/{NOPE}", technician="missing", pharmacist="missing",
               admin="forbidden"),
    staff_page("eprescribing.accept", lambda w: f"/eprescriptions/{NOPE}/accept", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden",
               data=lambda w: {"patient_id": w["patient"].id, "prescriber_id": w["prescriber"].id,
                               "formula_id": w["formula"].id, "dose_mg": "4.5", "days_supply": "30",
                               "written_date": "2026-11-20"}),
    staff_page("eprescribing.reject", lambda w: f"/eprescriptions/{NOPE}/reject", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden", data=lambda w: {"reason": "not LDN"}),
    staff_page("eprescribing.choose_patient", lambda w: f"/eprescriptions/{NOPE}/patient", method="POST",
               technician="missing", pharmacist="missing", admin="forbidden",
               data=lambda w: {"patient_id": w["patient"].id}),
    staff_page("eprescribing.add_patient", lambda w: f"/eprescriptions/{NOPE}/patient/new", method="POST",
               technician="missing", pharmacist="missing", admin="forbidden"),
    staff_page("eprescribing.add_prescriber", lambda w: f"/eprescriptions/{NOPE}/prescriber/new", method="POST",
               technician="missing", pharmacist="missing", admin="forbidden"),
    staff_page("eprescribing.clarify", lambda w: f"/eprescriptions/{NOPE}/clarify", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden",
               data=lambda w: {"question": "Confirm 4.5 mg?"}),
    staff_page("eprescribing.done", lambda w: f"/eprescriptions/{NOPE}/done", method="POST",
               technician="forbidden", pharmacist="missing", admin="forbidden"),
    staff_page("eprescribing.message", lambda w: f"/eprescriptions/messages/{NOPE}", technician="missing",
               pharmacist="missing", admin="forbidden"),
    staff_page("eprescribing.message_xml", lambda w: f"/eprescriptions/messages/{NOPE}.xml", technician="missing",
               pharmacist="missing", admin="forbidden"),
    staff_page("eprescribing.retry", lambda w: f"/eprescriptions/messages/{NOPE}/retry", method="POST",
               technician="forbidden", pharmacist="missing", admin="missing"),
    staff_page("eprescribing.cancel", lambda w: f"/eprescriptions/messages/{NOPE}/cancel", method="POST",
               technician="forbidden", pharmacist="missing", admin="missing"),
    staff_page("documents.upload_form", lambda w: "/documents/upload", admin="forbidden"),
    staff_page("documents.upload", lambda w: "/documents/upload", method="POST", admin="forbidden", data=lambda w: {}),
    staff_page("documents.page", lambda w: f"/documents/{NOPE}/pages/1.png", technician="missing",
               pharmacist="missing", admin="forbidden"),
    staff_page("documents.original", lambda w: f"/documents/{NOPE}/original", technician="missing",
               pharmacist="missing", admin="forbidden"),
    public("fhir.metadata", lambda w: "/fhir/metadata"),
    api_route("fhir.read", lambda w: f"/fhir/Patient/{w['patient'].id}", admin="forbidden"),
    api_route("fhir.search", lambda w: f"/fhir/MedicationRequest?patient=Patient/{w['patient'].id}",
              admin="forbidden"),
    api_route("fhir.create_medication_request", lambda w: "/fhir/MedicationRequest", method="POST",
              admin="forbidden", data=lambda w: {"resourceType": "MedicationRequest"}),
    Route("ncpdp.script", "POST", lambda w: "/ncpdp/script", dict.fromkeys(PRINCIPALS, "login"), json=True,
          data=lambda w: {"Message": "not xml"}),
]
