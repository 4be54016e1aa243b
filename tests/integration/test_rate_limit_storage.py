"""Rate limits are shared between workers when Redis is configured (the in-memory default counts per worker)."""
from __future__ import annotations

import socket
import uuid

import pytest

from pharmacy import create_app
from pharmacy.extensions import db

REDIS = ("127.0.0.1", 6379)


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379 on this machine")
def test_two_workers_share_the_login_limit(app_config, clock, staff) -> None:
    # A key prefix of our own so parallel runs do not count each other's attempts.
    config = {**app_config, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
              "RATELIMIT_KEY_PREFIX": f"ldn-test-{uuid.uuid4().hex[:8]}"}
    worker_a = create_app(config, clock=clock)
    worker_b = create_app(config, clock=clock)
    codes = []
    for i in range(12):
        worker = worker_a if i % 2 == 0 else worker_b
        codes.append(worker.test_client().post(
            "/login", data={"email": staff["pharmacist"].email, "password": "wrong"}).status_code)
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]  # each worker alone saw only six attempts
    for worker in (worker_a, worker_b):
        with worker.app_context():
            db.engine.dispose()

