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
    """The app on a real server in a thread, ended so that no request of this test outlives it.

    werkzeug's threaded server answers each connection in a thread of its own that `shutdown()` does not wait for: a
    block the page fetched after it loaded (data-fragment) can still be running when the test ends, holding a
    database connection that it hands back after the fixtures disposed the engine's pool — into a pool nobody holds,
    where the connection is dropped unclosed and psycopg warns from the garbage collector during some later test
    (CI failed so, once); on PostgreSQL its writes could also land after the tables were emptied for the next test.
    So the server counts the requests under way, refuses new ones once it is ending (a kept-alive connection can
    still carry one) and waits for the count to reach zero (tests/integration/test_live_server.py).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._under_way = 0
        self._ending = False
        self._paths: dict[object, str] = {}
        self._quiet = threading.Condition()
        self.server = make_server("127.0.0.1", 0, self._counted, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _counted(self, environ: dict, start_response: Any) -> Any:
        from werkzeug.wrappers import Response

        with self._quiet:
            if self._ending:
                return Response("the test server is stopping", status=503)(environ, start_response)
            self._under_way += 1
            key = object()
            self._paths[key] = environ.get("PATH_INFO", "")
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._one_done(key)
            raise
        return self._until_sent(body, key)

    def _until_sent(self, body: Any, key: object) -> Iterator[bytes]:
        """The answer, counted as under way until its last byte is handed to the server — not until the server closes
        it: after a POST werkzeug first drains the socket, and on a kept-alive connection that read waits for the
        browser's next request or for it to let go."""
        try:
            yield from body
        finally:
            try:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # Flask ends a streamed answer's app context here
            finally:
                self._one_done(key)

    def _one_done(self, key: object) -> None:
        with self._quiet:
            self._under_way -= 1
            self._paths.pop(key, None)
            self._quiet.notify_all()

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._quiet:
            self._ending = True
            if not self._quiet.wait_for(lambda: self._under_way == 0, timeout=30):
                raise RuntimeError(f"{self._under_way} request(s) still under way 30 s after the test ended: "
                                   f"{sorted(self._paths.values())}")
        self.server.shutdown()
        self.thread.join(timeout=5)
        # The listening socket only: the server's own server_close() would also wait for every connection's thread,
        # and a kept-alive one waits until the browser lets go.
        self.server.socket.close()


@pytest.fixture
def live_app(app_config: dict, clock: Any) -> Iterator[Any]:
    """The app with CSRF on, as in production (the browser carries the token like a person would)."""
    from pharmacy import create_app
    from pharmacy.extensions import db

    app = create_app({**app_config, "WTF_CSRF_ENABLED": True, "BASE_URL": "http://127.0.0.1"}, clock=clock)
    yield app
    with app.app_context():
        db.session.remove()  # the engine is the test database's one (tests/conftest.py): kept, not disposed


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


def portal_sign_in(page: Any, base: str, app: Any, email: str, dob: Any) -> None:
    """A patient signs in to the portal as they would: their address, the emailed code, their birth date."""
    from tests.portal_helpers import delivered_code

    page.goto(f"{base}/my/sign-in")
    page.get_by_label("Your email address or mobile number").fill(email)
    page.get_by_role("button", name="Send me a code").click()
    page.wait_for_url("**/my/sign-in/code")
    page.get_by_label("The 6-digit code").fill(delivered_code(app))
    page.get_by_label("Month").fill(str(dob.month))
    page.get_by_label("Day", exact=True).fill(str(dob.day))
    page.get_by_label("Year").fill(str(dob.year))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/my/")


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
