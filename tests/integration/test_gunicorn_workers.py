"""gunicorn.conf.py's workers: a preloaded app, no recycling by count, a memory guard that replaces a worker past
its limit after the request it is serving, fresh database connections in every worker, and a fast exit.

The guard is tested on a real gunicorn on loopback (a one-line WSGI app that answers with its pid, so the test
does not wait for the pharmacy app to build), and its arithmetic with a fake worker.
"""
from __future__ import annotations

import http.client
import os
import runpy
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from pharmacy.extensions import db

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "gunicorn.conf.py"


def load_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    for name in ("WEB_WORKER_MAX_RSS_MB", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))  # no temporary directory made
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_the_app_is_preloaded_and_workers_are_recycled_by_memory_never_by_count(monkeypatch, tmp_path) -> None:
    conf = load_conf(monkeypatch, tmp_path)
    assert conf["preload_app"] is True
    assert conf["max_requests"] == 0 and conf["max_requests_jitter"] == 0
    assert conf["worker_max_rss_mb"] == 400
    assert callable(conf["post_request"]) and callable(conf["post_fork"]) and callable(conf["worker_exit"])
    assert load_conf(monkeypatch, tmp_path, WEB_WORKER_MAX_RSS_MB="250")["worker_max_rss_mb"] == 250


def test_resident_memory_is_read_from_proc(monkeypatch, tmp_path) -> None:
    conf = load_conf(monkeypatch, tmp_path)
    statm = tmp_path / "statm"
    statm.write_text("100000 51200 3000 1 0 40000 0\n")  # 51,200 resident pages
    assert conf["rss_mb"](str(statm)) == pytest.approx(51200 * os.sysconf("SC_PAGE_SIZE") / 2**20)
    assert conf["rss_mb"](str(tmp_path / "missing")) is None
    if Path("/proc/self/statm").exists():
        assert 10 < conf["rss_mb"]() < 4000  # this test process


def fake_worker() -> SimpleNamespace:
    messages: list[str] = []
    log = SimpleNamespace(info=lambda msg, *args: messages.append(msg % args))
    return SimpleNamespace(alive=True, pid=4321, log=log, messages=messages)


def test_the_guard_stops_a_worker_only_past_its_limit(monkeypatch, tmp_path) -> None:
    recycle_if_over = load_conf(monkeypatch, tmp_path)["recycle_if_over"]
    w = fake_worker()
    assert recycle_if_over(w, 400, 399.9) is False and w.alive and not w.messages
    assert recycle_if_over(w, 400, 400.0) is False and w.alive  # at the limit: kept
    assert recycle_if_over(w, 0, 5000.0) is False and w.alive  # 0: the guard is off
    assert recycle_if_over(w, 400, None) is False and w.alive  # no /proc: nothing known, nothing done
    assert recycle_if_over(w, 400, 401.5) is True and w.alive is False
    assert w.messages == ["worker 4321: resident memory 402 MB is over 400 MB; replaced after this request"]


def test_post_fork_gives_a_preloaded_worker_a_pool_of_its_own(monkeypatch, tmp_path, app: Flask) -> None:
    post_fork = load_conf(monkeypatch, tmp_path)["post_fork"]
    with app.app_context():
        engine = db.engine
        engine.dispose()  # an empty pool to start from (the test database's engine serves every test)
        with engine.connect() as conn:  # the master used a connection: it sits in the pool
            conn.exec_driver_sql("SELECT 1")
        inherited = engine.pool
        assert inherited.checkedin() == 1
    post_fork(SimpleNamespace(app=SimpleNamespace(callable=app)), None)
    assert engine.pool is not inherited and engine.pool.checkedin() == 0
    inherited.dispose()  # in gunicorn the master keeps (and closes) it; here the test does
    post_fork(SimpleNamespace(app=SimpleNamespace()), None)  # not preloaded: nothing to do


@pytest.mark.parametrize(("booted", "code", "exits_now"), [(True, 0, True), (False, 0, False), (True, 1, False)])
def test_a_worker_leaving_cleanly_exits_at_once_and_any_other_the_ordinary_way(monkeypatch, tmp_path, booted, code,
                                                                                 exits_now) -> None:
    worker_exit = load_conf(monkeypatch, tmp_path)["worker_exit"]
    server = SimpleNamespace(app=SimpleNamespace())
    pid = os.fork()
    if pid == 0:  # the child: exactly gunicorn's path (sys.exit in a try, worker_exit in its finally)
        try:
            try:
                sys.exit(code)
            finally:
                worker_exit(server, SimpleNamespace(booted=booted))
        except BaseException:  # noqa: S110 - worker_exit returned: the ordinary exit, told apart below
            pass
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == (0 if exits_now else 7)


# ---- a real gunicorn ---------------------------------------------------------------------------------------------

TINY_APP = '''
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200
    return int(body)


@contextmanager
def gunicorn(tmp_path: Path, **env: str) -> Iterator[tuple[int, Path]]:
    (tmp_path / "tinyapp.py").write_text(TINY_APP)
    port = free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "WEB_CONCURRENCY": "1",
               "BIND": f"127.0.0.1:{port}", "GUNICORN_LOG_LEVEL": "info", **env}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(CONF), "--pythonpath", str(tmp_path),
                                   "tinyapp:app"], cwd=ROOT, env=environ, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    ask(port)
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.1)
            yield port, log
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.slow
def test_a_real_worker_past_its_limit_is_replaced_after_its_request_and_exits_cleanly(tmp_path) -> None:
    with gunicorn(tmp_path, WEB_WORKER_MAX_RSS_MB="1") as (port, log):  # every worker is over 1 MB
        pids = [ask(port) for _ in range(4)]
    assert len(set(pids)) == 4, pids  # each answered its request in full, then made way for a fresh one
    text = log.read_text()
    assert text.count("is over 1 MB; replaced after this request") >= 4
    assert "exited with code" not in text and "Traceback" not in text, text[-2000:]  # clean exits (code 0)

    with gunicorn(tmp_path) as (port, log):  # the default limit: one worker serves them all
        pids = [ask(port) for _ in range(20)]
    assert len(set(pids)) == 1
    assert "replaced after this request" not in log.read_text()

