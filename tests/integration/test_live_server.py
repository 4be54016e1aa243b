"""The browser tests' server (tests/browser/conftest.py LiveServer) ends only once no request of the test is still
being answered — and does not wait on a kept-alive connection that is merely open."""
from __future__ import annotations

import http.client
import threading
import time

from flask import Flask

from tests.browser.conftest import LiveServer


def _app(started: threading.Event, finished: list[float]) -> Flask:
    app = Flask("live-server-test")

    @app.get("/slow")
    def slow() -> str:
        started.set()
        time.sleep(1.0)
        finished.append(time.monotonic())
        return "done"

    @app.post("/form")
    def form() -> tuple[str, int, dict[str, str]]:
        return "", 303, {"Location": "/next"}

    return app


def test_the_server_waits_for_a_request_under_way() -> None:
    started, finished = threading.Event(), []
    answers: list[bytes] = []
    with LiveServer(_app(started, finished)) as server:
        def ask() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.server.server_port, timeout=10)
            conn.request("GET", "/slow")
            answers.append(conn.getresponse().read())
            conn.close()

        client = threading.Thread(target=ask)
        client.start()
        assert started.wait(10)
    ended = time.monotonic()
    assert finished and finished[0] <= ended, "the test ended while its request was still being answered"
    client.join(10)
    assert answers == [b"done"]


def test_a_kept_alive_connection_after_a_post_does_not_hold_the_end() -> None:
    """After a POST werkzeug drains the socket before closing the answer; on a connection the browser keeps open that
    read waits. The server must not wait for it."""
    server = LiveServer(_app(threading.Event(), []))
    with server:
        conn = http.client.HTTPConnection("127.0.0.1", server.server.server_port, timeout=10)
        conn.request("POST", "/form", body=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 303
        begun = time.monotonic()
    assert time.monotonic() - begun < 5
    conn.close()
