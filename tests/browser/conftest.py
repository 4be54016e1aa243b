"""A real browser (Playwright driving Debian's chromium) against the app served by a real server on loopback.

Skips with a clear message where /usr/bin/chromium is missing (the project's `make test` installs it
when it runs as root with apt). The app runs in a thread on its own port, on the test's database.
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
SCREENSHOTS = os.environ.get("SCREENSHOTS", "0") not in ("", "0")
# A block fetched after the page (static/js/app.js, data-fragment) is busy until it arrives or has failed.
DEFERRED_BLOCKS_ARRIVED = "() => !document.querySelector('[data-fragment][aria-busy=true]')"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# Playwright's auto-retrying assertions wait as long as the pages' actions do (their own default is 5 s: short for a
# loaded CI machine).
expect.set_options(timeout=15_000)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"no browser: {CHROMIUM} is missing (make test installs Debian's chromium as root)")
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(skip)


class LiveServer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def live_app(app_config: dict, clock: Any) -> Iterator[Any]:
    """The app with CSRF on, as in production (the browser carries the token like a person would)."""
    from pharmacy import create_app
    from pharmacy.extensions import db

    app = create_app({**app_config, "WTF_CSRF_ENABLED": True, "BASE_URL": "http://127.0.0.1"}, clock=clock)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def live_server(live_app: Any) -> Iterator[LiveServer]:
    with LiveServer(live_app) as server:
        live_app.extensions["pharmacy.settings"] = _with_base_url(live_app.extensions["pharmacy.settings"], server.url)
        yield server


def _with_base_url(settings: Any, url: str) -> Any:
    from dataclasses import replace

    return replace(settings, base_url=url)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium per test module; every test gets a context of its own (cookies, storage, pages), so nothing
    passes from one test to the next. Not one per session: Playwright's sync API is one per thread, and a few
    tests elsewhere (tests/web) start their own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()


def shot(page: Any, name: str) -> Path:
    """Save a screenshot under artifacts/screenshots/ (git-ignored) for a person to look at: with SCREENSHOTS=1 in
    the environment (`make screenshots`). `make test` checks the same states without writing the pictures (a
    full-page PNG is a tenth of a second, 160 of them in a pass, and nobody looks at CI's)."""
    page.wait_for_load_state("load")
    path = ARTIFACTS / f"{name}.png"
    if SCREENSHOTS:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def shown(page: Any, *texts: str | re.Pattern[str], within: str = "main") -> str:
    """The text of `within` once it shows every one of `texts`, the page loaded: after a click that submits a form or
    follows a link.

    Such a click may return before the next page is there (the old one is still shown), or once it has only begun to
    arrive (half parsed, app.js not run yet): inner_text() reads whatever is there at that moment. `expect` retries until
    the words appear, so they must be words the page before did not show (a flash message, the refusal); once they
    are there the page is the new one, and the load waited for after them is its own."""
    box = page.locator(within)
    for text in texts:
        expect(box).to_contain_text(text, use_inner_text=True)
    page.wait_for_load_state("load")
    return box.inner_text()
