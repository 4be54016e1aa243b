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
    staff_page("auth.account", lambda w: "/account"),
    staff_page("auth.change_password", lambda w: "/account/password", method="POST",
               data=lambda w: {"current_password": "not it", "new_password": "x", "repeat_password": "x"}),
    staff_page("dashboard.home", lambda w: "/"),
    staff_page("dashboard.search", lambda w: "/search?q=ell", admin="forbidden"),
    staff_page("patients.index", lambda w: "/patients/", admin="forbidden"),
    staff_page("patients.detail", lambda w: f"/patients/{w['patient'].id}", admin="forbidden"),
]

ROUTES += [
    staff_page("admin.users", lambda w: "/admin/users", technician="forbidden", pharmacist="forbidden"),
    staff_page("admin.create_user", lambda w: "/admin/users", method="POST", technician="forbidden",
               pharmacist="forbidden", data=lambda w: {"email": "new@pharmacy.test", "full_name": "New Person",
                                                       "role": "technician", "password": "a long enough secret"}),
    staff_page("admin.set_active", lambda w: f"/admin/users/{w['staff']['technician'].id}/active", method="POST",
               technician="forbidden", pharmacist="forbidden", data=lambda w: {"active": "1"}),
    staff_page("admin.reset_password", lambda w: f"/admin/users/{w['staff']['pharmacist2'].id}/password",
               method="POST", technician="forbidden", pharmacist="forbidden",
               data=lambda w: {"password": "another long secret"}),
    staff_page("admin.tokens", lambda w: "/admin/tokens"),
    staff_page("admin.issue_token", lambda w: "/admin/tokens", method="POST", data=lambda w: {"name": "matrix"}),
    staff_page("admin.revoke_token", lambda w: "/admin/tokens/999999/revoke", method="POST",
               technician="missing", pharmacist="missing", admin="missing"),
    staff_page("admin.audit", lambda w: "/admin/audit", technician="forbidden", pharmacist="forbidden"),
    staff_page("admin.audit_csv", lambda w: "/admin/audit.csv", technician="forbidden", pharmacist="forbidden"),
]
