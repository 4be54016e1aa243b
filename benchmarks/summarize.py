"""Markdown tables of the latest results (benchmarks/results/*.json), for the README's performance section.

    .venv/bin/python benchmarks/summarize.py            # print them
    .venv/bin/python benchmarks/summarize.py --readme   # and replace the tables in benchmarks/README.md's Figures
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.load import load_text, target_text

RESULTS = Path(__file__).resolve().parent / "results"
DBS = ("sqlite", "postgres")


def load(name: str, db: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}-{db}.json"
    return json.loads(path.read_text()) if path.exists() else None


def md(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def generator() -> str:
    """The generator's report as the newest benchmark run recorded it (each run keeps its database's report)."""
    rows = []
    for db in DBS:
        found = [r for r in (load(name, db) for name in ("reminders", "pages")) if r and r.get("generator")]
        if not found:
            continue
        r = max(found, key=lambda x: x["recorded_at"])
        g = r["generator"]
        rows.append([db, r["recorded_at"][:10], f"{g['patients']:,}", f"{g['rows']['orders']:,}", f"{g['total_rows']:,}",
                     g["seconds"], f"{g['rows_per_second']:,}", g["peak_rss_mb"], g.get("wall_seconds", ""),
                     "≤ 500 MB"])
    return md(["db", "generated", "patients", "fills (orders)", "rows", "seconds", "rows/s", "peak RSS MB",
               "wall s (with the adherence snapshot)", "target"], rows)


def reminders() -> str:
    rows, replan = [], []
    for db in DBS:
        r = load("reminders", db)
        if not r:
            continue
        for c in r["claims"]:
            rows.append([db, c["at"][:16], f"{c['stored_rows']:,}", f"{c['due']:,}", c["bare_select_ms"],
                         c["raw_sql_claim_ms"], c["claim_batch_ms"], f"{c['ratio_vs_bare_select']}×",
                         c["claim_us_per_due_row"], c.get("legacy_claim_ms", ""),
                         f"{c.get('legacy_ratio_vs_bare_select', '')}×"])
        if "replan" in r:
            m, b, base = r["replan"]["changed"], r["replan"]["restored"], r["replan"]["per_fill_baseline"]
            replan.append([db, f"{m['fills']:,}", f"{m['moved']:,}", m["seconds"], b["seconds"], m["peak_rss_mb"],
                           f"{base['estimated_seconds_for_all']} (from {base['sample_fills']} fills)", "≤ 60 s"])
    return (md(["db", "now (UTC)", "outbox rows", "due", "bare select ms", "raw-SQL claim ms", "claim_batch ms",
                "× bare", "µs per due row", "per-row claim (before) ms", "before × bare"], rows)
            + "\n\n" + md(["db", "fills re-planned", "rows moved", "replan_all s (10→11)", "replan_all s (back)",
                          "peak RSS MB", "per-fill path, est. s", "target"], replan))


def _pct(x: dict[str, Any], key: str) -> str:
    return f"{x[key]:.0%}" if key in x else ""


def pages() -> str:
    """Medians over the ABAB rounds; shares against the adjacent baselines (AF: audited fortunes)."""
    rows, notes = [], []
    for db in DBS:
        r = load("pages", db)
        if not r or "summary" not in r:
            continue
        for x in r["summary"]:
            py = x.get("python_client") or {}
            rows.append([db, x["name"], x.get("rps", ""), _pct(x, "share_hello"), _pct(x, "share_fortunes"),
                         _pct(x, "share_audited fortunes"), x.get("p50_ms", ""), x.get("p95_ms", ""),
                         x.get("p99_ms", ""), f"{py['p50_ms']} / {py['p95_ms']} / {py['p99_ms']}" if py else "",
                         x["one_request_ms"], load_text(x.get("load1")), target_text(x.get("targets")),
                         (x.get("verdict", "") + (f"; {x['note']}" if x.get("note") else "")).strip("; ")])
        runs = sum(len(s) for s in r["baselines"]["runs"]) + sum(len(e["runs"]) for e in r["pages"].values())
        replaced = r["runs_with_a_worker_replaced"]
        notes.append(f"{db}: {r['recorded_at'][:10]}, {r['patients']:,} patients, {r['workers']} workers, wrk -t2 "
                     f"-c{r['connections']} -d{r['duration_s']:g}s × {r['rounds']} rounds; adherence snapshot "
                     f"{r['adherence_snapshot']['rows']:,} rows; worker pids unchanged across all {runs} runs: "
                     f"{'yes' if not replaced else f'NO ({replaced})'}; web worker peak RSS "
                     f"{', '.join(str(v) for v in r['worker_peak_rss_mb'])} MB"
                     + (f", after the runs {', '.join(str(v) for v in r['worker_rss_after_mb'])} MB"
                        if r.get("worker_rss_after_mb") else "") + " (target ≤ 150)"
                     + (f"; {r['note']}" if r.get("note") else ""))
    return (md(["db", "page", "req/s", "of hello", "of fortunes", "of AF", "p50 ms", "p95 ms", "p99 ms",
                "Python client p50 / p95 / p99", "one request ms", "load 1m", "target", "verdict"], rows)
            + "\n\n" + "\n".join(f"- {n}" for n in notes))


def recycling() -> str:
    rows = []
    for db in DBS:
        r = load("recycling", db)
        if not r:
            continue
        for x in r["results"]:
            w, p = x["wrk"], x["python"]
            rows.append([x["config"], w["rps"], w["p50_ms"], w["p99_ms"], w["max_ms"], p["p50_ms"], p["p99_ms"],
                         p["max_ms"], p["gaps"], p["longest_gap_ms"], w["workers_started"] + p["workers_started"],
                         f"{w['load1']} / {p['load1']}"])
        rows.append([f"({r['recorded_at'][:10]}, {db}, {r['duration_s']:g} s per client)", "", "", "", "", "", "",
                     "", "", "", "", ""])
    return md(["configuration", "wrk req/s", "wrk p50", "wrk p99", "wrk max ms", "Python p50", "Python p99",
               "Python max ms", "gaps > 250 ms", "longest gap ms", "workers started", "load 1m"], rows)


def smtp() -> str:
    rows = []
    for db in DBS:
        r = load("smtp", db)
        if not r:
            continue
        best = max(r["runs"], key=lambda x: x["deliver_per_s"])
        bare = max(x["bare_per_s"] for x in r["runs"])
        rows.append([db, r["messages"], best["deliver_per_s"], bare, f"{r['share_of_bare']:.0%}", "≥ 80%"])
    return md(["db", "messages", "deliver_due msg/s", "bare smtplib msg/s", "share", "target"], rows)


def queries() -> str:
    data = {db: load("queries", db) for db in DBS}
    labels = next((list(d["small"]) for d in data.values() if d), [])
    rows = []
    for label in labels:
        row = [label]
        for db in DBS:
            d = data[db]
            if not d or "missing" in d["small"][label]:
                row += ["—", "—", "—"]
                continue
            s, lg = d["small"][label], d["large"][label]
            row += [s["statements"], lg["statements"], lg["ms"]]
        rows.append(row)
    return md(["page", "SQLite @100", "SQLite @100k", "SQLite ms @100k", "PG @100", "PG @100k", "PG ms @100k"], rows)


SECTIONS = (("Generator", generator), ("Reminders: claiming and re-planning", reminders),
            ("Worker recycling: hello under load", recycling),
            ("Pages under gunicorn + wrk, against same-run baselines", pages),
            ("Outbox delivery over SMTP", smtp), ("SQL statements per request", queries))
README = Path(__file__).resolve().parent / "README.md"


def write_readme(path: Path = README) -> list[str]:
    """Replace each section's table in benchmarks/README.md (from its "#### title" to the next heading) with the
    one made now; returns the titles replaced. Text written by hand around the tables is left alone."""
    text = path.read_text()
    done = []
    for title, fn in SECTIONS:
        head = f"#### {title}\n"
        start = text.find(head)
        if start < 0:
            continue
        body = start + len(head)
        ends = [i for i in (text.find("\n#### ", body), text.find("\n## ", body)) if i >= 0]
        end = min(ends) if ends else len(text)
        text = text[:body] + "\n" + fn() + "\n" + text[end:]
        done.append(title)
    path.write_text(text)
    return done


def main() -> None:
    if "--readme" in sys.argv[1:]:
        print("replaced in benchmarks/README.md:", ", ".join(write_readme()))
        return
    for title, fn in SECTIONS:
        print(f"### {title}\n\n{fn()}\n")


if __name__ == "__main__":
    main()
