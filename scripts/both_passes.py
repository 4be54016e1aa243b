"""Run the suite on SQLite and on PostgreSQL side by side (`make test`), and say how each went.

The two passes are independent (a database file on SQLite, a database of its own on PostgreSQL — one per xdist
worker — and ports chosen by the system): run one after the other, a pass waiting on a browser or a subprocess
leaves a core idle. `make test` gives each pass two xdist workers (`-n`, among the pytest arguments).
Each pass writes to its own log; a progress line for both is printed every 30 seconds, and each log in full
once its pass ends. Exit status: 0 only when both passes (or the SQLite pass, with no PostgreSQL server) pass.

Usage: both_passes.py PYTHON PG_ADMIN_URL [pytest arguments...]
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRESS = re.compile(r"\[\s*(\d+%)\]")


def last_progress(log: Path) -> str:
    try:
        text = log.read_text(errors="replace")[-4000:]
    except FileNotFoundError:
        return "starting"
    found = PROGRESS.findall(text)
    return found[-1] if found else "starting"


def main() -> int:
    python, admin_url, *pytest_args = sys.argv[1:]
    logs = Path(tempfile.mkdtemp(prefix="ldn-tests-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    passes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            passes[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             env={**env, **(extra_env or {})}), log)

    start("sqlite", [python, "-m", "pytest", *pytest_args])
    pg_up = subprocess.call([python, str(HERE / "pg_available.py"), admin_url]) == 0
    if pg_up:
        start("postgresql", [python, str(HERE / "with_pg_database.py"), python, "-m", "pytest", *pytest_args],
              {"PG_ADMIN_URL": admin_url})
    else:
        print(f"PostgreSQL not reachable at {admin_url}: the PostgreSQL pass is skipped", flush=True)
    began = time.monotonic()
    next_report = began + 30
    shown: set[str] = set()
    results: dict[str, int] = {}
    while len(results) < len(passes):
        time.sleep(1)
        for name, (proc, _log) in passes.items():
            if name not in results and proc.poll() is not None:
                results[name] = proc.returncode
        for name in passes:
            if name in results and name not in shown:
                shown.add(name)
                print(f"\n======== {name} pass: its output ========", flush=True)
                sys.stdout.write(passes[name][1].read_text(errors="replace"))
                print(f"======== {name} pass: {'passed' if results[name] == 0 else 'FAILED'} ========", flush=True)
        if time.monotonic() >= next_report and len(results) < len(passes):
            next_report += 30
            states = ", ".join(f"{n} {'done' if n in results else last_progress(log)}" for n, (_p, log) in passes.items())
            print(f"[{int(time.monotonic() - began)} s] {states}", flush=True)
    minutes, seconds = divmod(int(time.monotonic() - began), 60)
    verdict = ", ".join(f"{n} {'passed' if code == 0 else 'FAILED'}" for n, code in results.items())
    print(f"\nBoth passes in {minutes} min {seconds} s: {verdict}", flush=True)
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
