"""The browser can sign in and sees the Today page (the harness the journeys build on)."""
from __future__ import annotations

from tests.browser.conftest import shot, sign_in
from tests.conftest import PASSWORD


def test_sign_in_and_today_page(live_server, page, staff) -> None:
    sign_in(page, live_server.url, staff["pharmacist"].email, PASSWORD)
    assert page.get_by_role("heading", name="Today").is_visible()
    assert page.get_by_text("Orders to verify").is_visible()
    shot(page, "today-empty")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.reload()
    assert errors == []  # no CSP violation, no script error
