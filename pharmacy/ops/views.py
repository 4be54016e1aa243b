"""GET /healthz, /readyz and /metrics: for load balancers, monitors and Prometheus — no sign-in, no session.

- /healthz: the process is up and answering (nothing else is touched). 200 {"status": "ok"}.
- /readyz: the database answers, its schema is at this code's migration head, and the
  scheduler's heartbeat is recent. 200 when ready, 503 when not, JSON either way with one entry
  per check (revisions and ages, never data). A stale or missing heartbeat is reported as such;
  it makes the answer 503 only when READYZ_REQUIRE_SCHEDULER is on — the default in
  production, so a monitor on /readyz notices reminders stopping. Behind a load balancer
  with several web servers, point the balancer at /healthz (or set READYZ_REQUIRE_SCHEDULER=0)
  so a stopped scheduler does not take the web servers out of rotation.
- /metrics: Prometheus text format (see metrics.py). Open when METRICS_TOKEN is unset (serve
  it on a private network only: the example nginx site denies it from outside); with
  METRICS_TOKEN set it requires `Authorization: Bearer <METRICS_TOKEN>`.

None of them is rate limited, and none reads or writes the session cookie, so a probe every
few seconds neither trips a limit nor keeps a signed-in browser's session alive.
"""
from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.sessions import SessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from pharmacy.core import sessions
from pharmacy.core.errors import ConfigError
from pharmacy.core.numbers import digits_only
from pharmacy.extensions import limiter
from pharmacy.ops import health, metrics

bp = Blueprint("ops", __name__)
PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@bp.get("/healthz")
def healthz() -> Any:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    """Database reachable, migrations at head, scheduler heartbeat recent."""
    ready, report = health.readiness()
    return jsonify(report), 200 if ready else 503


@bp.get("/metrics", endpoint="metrics")
def metrics_view() -> Any:
    """Prometheus metrics (bearer METRICS_TOKEN when set)."""
    expected = current_app.config.get("METRICS_TOKEN")
    if expected:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), str(expected).encode()):
            response = jsonify(code="unauthorized", status=401, message="A metrics token is required.")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


class _NoSessionFor(SessionInterface):
    """The app's session interface, except that the ops paths and static files get no session at all (no cookie
    read or set), and the answers that asked to leave the cookie alone (core.sessions.leave_cookie) set none."""

    def __init__(self, inner: SessionInterface, paths: frozenset[str]) -> None:
        self.inner = inner
        self.paths = paths

    def open_session(self, app: Flask, request: Any) -> Any:
        # Static files need no session, and one refreshed with each stylesheet or icon could land after a form's
        # answer and put back the session as it was (core.sessions.leave_cookie).
        if request.path in self.paths or request.path.startswith("/static/"):
            return self.make_null_session(app)
        return self.inner.open_session(app, request)

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        if sessions.cookie_left():
            return None  # a page's sub-resource (core.sessions.leave_cookie)
        return self.inner.save_session(app, session, response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _env_default(app: Flask, key: str) -> None:
    """Settings the ops endpoints read (until config.py carries them): app.config, else the environment."""
    if app.config.get(key) is None:
        app.config[key] = os.environ.get(key) or None


def init_app(app: Flask) -> None:

    for key in ("METRICS_TOKEN", "READYZ_REQUIRE_SCHEDULER", "TRUSTED_PROXY_HOPS"):
        _env_default(app, key)
    limiter.exempt(bp)
    if not isinstance(app.session_interface, _NoSessionFor):
        app.session_interface = _NoSessionFor(app.session_interface, PATHS)
    metrics.install_request_hooks(app)
    raw = str(app.config.get("TRUSTED_PROXY_HOPS") or "0").strip()
    if not digits_only(raw) or int(raw) > 5:
        raise ConfigError(f"TRUSTED_PROXY_HOPS={raw!r} must be the number of proxies in front of gunicorn (0-5)")
    hops = int(raw)
    if hops > 0:
        # Behind nginx (or any proxy that sets X-Forwarded-For and -Proto): the client's address for rate limits
        # and the audit trail, and https for generated links. Only trust as many hops as there are proxies in
        # front of gunicorn, and make sure nothing else can reach gunicorn's port. The Host header is the
        # proxy's to set (nginx: proxy_set_header Host $host); X-Forwarded-Host is never trusted.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
