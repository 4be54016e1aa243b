"""Routes of ops: health, readiness and metrics are public (no sign-in, no PHI; the test database is
built by create_all, which stamps the migration head, and a missing scheduler is reported, not a 503,
outside production). /metrics is open here because METRICS_TOKEN is unset; with a token it answers 401
to anyone without it (tests/integration/test_ops_health.py)."""
from tests.web.route_matrix import Route, public

ROUTES: list[Route] = [
    public("ops.healthz", lambda w: "/healthz", json=True),
    public("ops.readyz", lambda w: "/readyz", json=True),
    public("ops.metrics", lambda w: "/metrics"),
]
