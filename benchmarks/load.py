"""Load generation for the server benchmarks: gunicorn started and stopped, wrk, a plain Python client, and what
is checked around every run (the 1-minute load average, the worker pids before and after).

Two clients measure the same thing in different ways so that neither is taken on faith:
* wrk (C, event loop): throughput and its own latency histogram (p50/p95/p99/max from its Lua `done`);
* a plain Python client: N threads, one http.client connection each (reopened whenever the server closes it —
  gunicorn's sync workers close after every response), for a fixed duration; every latency kept, percentiles
  by sorting. It is slower than wrk (the GIL, on the same two cores as the server), so its throughput is
  lower; its percentiles are the cross-check.
"""
from __future__ import annotations

import http.client
import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LUA_DONE = """
done = function(summary, latency, requests)
  io.write(string.format("BENCH p50_us=%d p95_us=%d p99_us=%d max_us=%d requests=%d duration_us=%d non2xx=%d errors=%d\\n",
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, summary.requests,
    summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass
class Target:
    """What one run requests: paths in rotation, a method, a body and headers (the session cookie, a token)."""

    paths: Sequence[str]
    method: str = "GET"
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def load1() -> float:
    """The 1-minute load average (printed beside every figure: the machine is shared)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0:
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, stdout=subprocess.DEVNULL)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- gunicorn ------------------------------------------------------------------------------------------------


class Server:
    """gunicorn on loopback with the given config file and flags; its log (access log included) goes to a file."""

    def __init__(self, root: Path, conf: Path, app: str, env: dict[str, str], log_path: Path, *,
                 workers: int, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        # --timeout 300: a page slower than the production 30 s is measured, not killed.
        self.cmd = [gunicorn, "-c", str(conf), "--workers", str(workers), "--bind", f"127.0.0.1:{self.port}",
                    "--timeout", "300", "--graceful-timeout", "5", *extra, app]
        self.env = {**env, "BIND": f"127.0.0.1:{self.port}"}
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen[Any] | None = None
        self._log: IO[str] | None = None

    def start(self, ready_path: str = "/__bench/hello", timeout: float = 180) -> None:
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.root, start_new_session=True,
                                     stdout=self._log, stderr=self._log)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited early (see {self.log_path})")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", ready_path)
                if conn.getresponse().status == 200 and len(self.worker_pids()) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit("gunicorn did not answer")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return sorted(int(x) for x in out.split())

    def stop(self) -> None:
        if self.proc is not None:
            with _suppress():
                os.killpg(self.proc.pid, signal.SIGTERM)  # the process group of the gunicorn started above
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with _suppress():
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, *_: object) -> bool:
        return et is not None and issubclass(et, ProcessLookupError)


# ---- wrk -----------------------------------------------------------------------------------------------------


def _lua(target: Target) -> str:
    lua = LUA_DONE
    if target.method != "GET" or target.body is not None:
        body = (target.body or "").replace("\\", "\\\\").replace('"', '\\"')
        lua += f'wrk.method = "{target.method}"\nwrk.body = "{body}"\n'
    if len(target.paths) > 1:
        listing = ", ".join(f'"{p}"' for p in target.paths)
        lua += f"""
paths = {{{listing}}}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, paths[(counter * 7919) % #paths + 1])
end
"""
    return lua


def run_wrk(wrk: str, base: str, target: Target, duration: float, *, threads: int = 2, conns: int = 8
            ) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_lua(target))
        script = fh.name
    headers: list[str] = []
    for name, value in target.headers.items():
        headers += ["-H", f"{name}: {value}"]
    try:
        seconds = max(1, round(duration))  # wrk takes whole seconds
        out = subprocess.run([wrk, f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "30s", "-s", script,
                              *headers, base + target.paths[0]], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    m = re.search(r"BENCH (.*)", out)
    if not m:
        raise SystemExit(f"wrk said:\n{out}")
    v = {k: int(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    return {"rps": round(v["requests"] / (v["duration_us"] / 1e6), 1), "p50_ms": round(v["p50_us"] / 1000, 1),
            "p95_ms": round(v["p95_us"] / 1000, 1), "p99_ms": round(v["p99_us"] / 1000, 1),
            "max_ms": round(v["max_us"] / 1000, 1), "requests": v["requests"], "non_2xx": v["non2xx"],
            "errors": v["errors"]}


# ---- the plain Python client ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def longest_gaps(done_at: Sequence[float], threshold_s: float) -> list[float]:
    """Intervals (seconds) longer than `threshold_s` in which no response completed: a server that stopped
    answering. `done_at` is the completion time of every response, in any order."""
    times = sorted(done_at)
    return [b - a for a, b in itertools.pairwise(times) if b - a > threshold_s]


def run_python_client(port: int, target: Target, duration: float, *, conns: int = 8, gap_s: float = 0.25
                      ) -> dict[str, Any]:
    """`conns` threads, each with one http.client connection (reopened when the server closes it), requesting
    `target` until `duration` is up. Every latency is kept."""
    latencies: list[list[float]] = [[] for _ in range(conns)]
    finished: list[list[float]] = [[] for _ in range(conns)]
    bad = [0] * conns
    errors = [0] * conns
    start = time.perf_counter()
    stop_at = start + duration
    body = target.body.encode() if target.body is not None else None

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = i
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            path = target.paths[(n * 7919) % len(target.paths)]
            n += conns
            try:
                conn.request(target.method, path, body=body, headers=target.headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                continue
            t1 = time.perf_counter()
            latencies[i].append(t1 - t0)
            finished[i].append(t1)
            if status >= 400:
                bad[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(x for part in latencies for x in part)
    done_at = [x for part in finished for x in part]
    gaps = longest_gaps(done_at, gap_s)
    ms: Callable[[float], float] = lambda s: round(s * 1000, 1)  # noqa: E731 - local shorthand
    return {"rps": round(len(lat) / elapsed, 1), "p50_ms": ms(percentile(lat, 50)), "p95_ms": ms(percentile(lat, 95)),
            "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else 0), "requests": len(lat),
            "non_2xx": sum(bad), "errors": sum(errors), "gaps_over_ms": round(gap_s * 1000),
            "gaps": len(gaps), "longest_gap_ms": ms(max(gaps, default=0.0))}


def settle(port: int, path: str, *, workers: int = 2, fast_ms: float = 150, timeout: float = 180) -> float:
    """Wait until the server is idle again; returns the seconds waited. When a run ends, requests of a slow page
    may still be queued on the listening socket (the client has gone, the sync workers serve them anyway): the
    next run would start behind them. Idle: `workers` concurrent requests for `path` (a cheap route) all answered
    within `fast_ms`, twice in a row."""
    t0 = time.perf_counter()
    in_a_row = 0
    while in_a_row < 2:
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"the server did not settle within {timeout:.0f} s")
        took: list[float] = []

        def ask(took: list[float] = took) -> None:
            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            took.append((time.perf_counter() - t) * 1000)

        threads = [threading.Thread(target=ask, daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        in_a_row = in_a_row + 1 if len(took) == workers and max(took) <= fast_ms else 0
        if in_a_row < 2:
            time.sleep(0.1)
    return round(time.perf_counter() - t0, 2)


def one_request_ms(port: int, target: Target, *, repeat: int = 5, slow_ms: float = 1000) -> tuple[float, int]:
    """Median time of `repeat` sequential requests on an otherwise idle server, after one warm-up (only 2 when the
    warm-up took longer than `slow_ms`); and the last status."""
    samples: list[float] = []
    status = 0
    body = target.body.encode() if target.body is not None else None
    n = repeat + 1
    i = 0
    while i < n:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        t0 = time.perf_counter()
        conn.request(target.method, target.paths[i % len(target.paths)], body=body, headers=target.headers)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        status = resp.status
        elapsed = (time.perf_counter() - t0) * 1000
        if i == 0 and elapsed > slow_ms:
            n = 3
        if i > 0:
            samples.append(elapsed)
        i += 1
    samples.sort()
    return round(samples[len(samples) // 2], 1), status


def target_text(t: dict[str, Any] | None) -> str:
    """A page's targets in a table cell (bench_pages.py prints it, summarize.py writes it into the README)."""
    if not t:
        return ""
    parts = []
    if t.get("share_of_audited_fortunes") is not None:
        parts.append(f"≥ {t['share_of_audited_fortunes']:.0%} of AF")
    if t.get("p95_ms") is not None:
        parts.append(f"p95 ≤ {t['p95_ms']:.0f} ms")
    if t.get("one_request_ms") is not None:
        parts.append(f"one ≤ {t['one_request_ms']:.0f} ms")
    return ", ".join(parts)


def load_text(values: list[float | None] | None) -> str:
    """The load averages read before a figure's runs, as one value or a range."""
    vals = [v for v in values or [] if v is not None]
    if not vals:
        return ""
    return f"{min(vals):.1f}" if min(vals) == max(vals) else f"{min(vals):.1f}–{max(vals):.1f}"
