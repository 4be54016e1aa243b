"""Routes of core (sign-in), dashboard, patients."""
from tests.web.route_matrix import Route, public, staff_page

ROUTES: list[Route] = [
    public("static", lambda w: "/static/css/app.css"),
    public("api-docs.openapi_json", lambda w: "/api/v1/openapi.json", json=True),
    Route("auth.login", "GET", lambda w: "/login", {"anonymous": "ok", "other_patient": "ok", "technician": "ok",
                                                   "pharmacist": "ok", "admin": "ok"}),
    Route("auth.login", "POST", lambda w: "/login",
          {"anonymous": "any", "other_patient": "any", "technician": "ok", "pharmacist": "ok", "admin": "ok"},
          data=lambda w: {"email": "nobody@example.com", "password": "wrong password"}),
    Route("auth.logout", "POST", lambda w: "/logout", dict.fromkeys(
        ("anonymous", "other_patient", "technician", "pharmacist", "admin"), "login")),  # back to sign-in
    staff_page("dashboard.home", lambda w: "/"),
    staff_page("dashboard.search", lambda w: "/search?q=ell", admin="forbidden"),
    staff_page("patients.index", lambda w: "/patients/", admin="forbidden"),
    staff_page("patients.detail", lambda w: f"/patients/{w['patient'].id}", admin="forbidden"),
]
