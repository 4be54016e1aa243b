"""Routes of prescriber_links: the prescriber's renewal-request page behind a signed link.

Nobody in the matrix holds a real prescriber link: every visitor gets the tampered token and must get the
friendly "link does not work" page ("invalid"), never the request; tests/web/test_prescriber_renewal_link.py
covers real links.
"""
from tests.web.route_matrix import Route, public

TAMPERED = "eyJwIjoxLCJyeCI6MSwibiI6Im5vcGUifQ.AAAAAA.tampered-signature"

ROUTES: list[Route] = [
    public("prescriber_links.confirm_form", lambda w: f"/renewal-request/{TAMPERED}", outcome="invalid"),
    public("prescriber_links.show", lambda w: f"/renewal-request/{TAMPERED}", method="POST", outcome="invalid",
           data=lambda w: {"npi": "1234567893"}),
]
