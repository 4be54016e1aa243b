"""Routes of reminders: the outbox (pharmacists and admins) and the patient's preferences link.

The preferences pages show nothing but the pharmacy's name, so any visitor holding the link may use
them (that is what a one-click unsubscribe is); the matrix checks they never show the patient's data.
"""
from tests.web.route_matrix import PRINCIPALS, Route, staff_page

ROUTES: list[Route] = [
    staff_page("reminders.outbox", lambda w: "/outbox", technician="forbidden"),
    staff_page("reminders.message", lambda w: f"/outbox/{w['message'].id}", technician="forbidden"),
    # The renewal request to the prescriber, as the outbox shows it (the same route, another kind of email).
    staff_page("reminders.message", lambda w: f"/outbox/{w['renewal_message'].id}", technician="forbidden"),
    staff_page("reminders.retry", lambda w: f"/outbox/{w['message'].id}/retry", method="POST",
               technician="forbidden", pharmacist="any", admin="any"),
    staff_page("reminders.cancel", lambda w: f"/outbox/{w['message'].id}/cancel", method="POST",
               technician="forbidden", pharmacist="any", admin="any"),
    Route("reminders.preferences", "GET", lambda w: f"/preferences/{w['prefs_token']}", dict.fromkeys(PRINCIPALS, "ok")),
    Route("reminders.preferences", "POST", lambda w: f"/preferences/{w['prefs_token']}",
          dict.fromkeys(PRINCIPALS, "ok"), data=lambda w: {"reminders_opt_in": "1"}),
    Route("reminders.unsubscribe", "POST", lambda w: f"/preferences/{w['prefs_token']}/unsubscribe",
          dict.fromkeys(PRINCIPALS, "ok"), data=lambda w: {"List-Unsubscribe": "One-Click"}),
]
