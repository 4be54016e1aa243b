"""Markdown tables of the latest results (benchmarks/results/*.json), for the README's performance section.

    .venv/bin/python benchmarks/summarize.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    rows = []
    for db in DBS:
        r = load("reminders", db)
        g = (r or {}).get("generator")
        if g:
            rows.append([db, f"{g['patients']:,}", f"{g['rows']['orders']:,}", f"{g['total_rows']:,}",
                         g["seconds"], f"{g['rows_per_second']:,}", g["peak_rss_mb"], "≤ 500 MB"])
    return md(["db", "patients", "fills (orders)", "rows", "seconds", "rows/s", "peak RSS MB", "target"], rows)


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


def pages() -> str:
    rows = []
    for db in DBS:
        r = load("pages", db)
        if not r:
            continue
        for name, x in r["results"].items():
            rows.append([db, name, x["rps"], f"{x.get('share_of_hello', 0):.0%}", x["p50_ms"], x["p95_ms"],
                         x.get("single_request_ms", ""), x.get("note", "")])
        rows.append([db, "web worker peak RSS (MB)", ", ".join(str(v) for v in r["worker_peak_rss_mb"]), "", "", "",
                     "", "target ≤ 150"])
    return md(["db", "page", "req/s", "of hello", "p50 ms", "p95 ms", "one request ms", ""], rows)


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


def main() -> None:
    for title, fn in (("Generator", generator), ("Reminders: claiming and re-planning", reminders),
                      ("Pages under gunicorn + wrk", pages), ("Outbox delivery over SMTP", smtp),
                      ("SQL statements per request", queries)):
        print(f"### {title}\n\n{fn()}\n")


if __name__ == "__main__":
    main()
