"""Reports of a benchmark run other than the HTML page: CSV files, the terminal summary, and
the side-by-side comparison of several runs (`thrifty bench compare`)."""

import csv
from pathlib import Path

from thrifty.core.numbers import significant
from thrifty.core.output import table

# (metric key, column heading, True when higher is better)
HEADLINE = [
    ("request_throughput_per_s", "req/s", True),
    ("output_throughput_tokens_per_s", "out tok/s", True),
    ("ttft_ms_p50", "TTFT p50 ms", False),
    ("ttft_ms_p90", "TTFT p90 ms", False),
    ("ttft_ms_p99", "TTFT p99 ms", False),
    ("tpot_ms_p50", "TPOT p50 ms", False),
    ("tpot_ms_p99", "TPOT p99 ms", False),
    ("itl_ms_p50", "ITL p50 ms", False),
    ("e2e_ms_p50", "E2E p50 ms", False),
    ("e2e_ms_p99", "E2E p99 ms", False),
    ("goodput_requests_per_s", "goodput req/s", True),
    ("errors_count", "errors", False),
]
MEMORY = [
    ("weights_gib", "weights GiB", False),
    ("kv_cache_gib", "KV cache GiB", True),
    ("kv_cache_tokens", "KV cache tokens", True),
    ("max_concurrency_ratio", "max concurrency (x)", True),
    ("kv_cache_usage_peak_pct", "KV usage peak %", False),
    ("preemptions_count", "preemptions", False),
    # PSS splits pages the server's processes share; the RSS sum counts them in each one.
    ("server_memory_peak_gib", "server PSS peak GiB (USS off Linux)", False),
    ("server_rss_peak_gib", "server RSS-sum peak GiB (shared pages per process)", False),
    ("gpu_memory_peak_gib", "GPU memory peak GiB (the server's GPUs)", False),
    ("gpu_total_gib", "GPU total GiB (the server's GPUs)", True),
]


# --- CSV ---------------------------------------------------------------------------------

def write_requests_csv(bench: dict, path: Path) -> None:
    """One row per request: its point, adapter, outcome and timeline in milliseconds."""
    loads = {p["index"]: p["load"] for p in bench["points"]}
    columns = ["point", "load", "adapter", "model", "ok", "error", "input_tokens",
               "output_tokens", "scheduled_s", "started_s", "ttft_ms", "tpot_ms", "itl_ms_mean",
               "itl_ms_max", "e2e_ms"]
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in bench["requests"]:
            itl = r["itl_s"]
            writer.writerow([
                r["point"], loads.get(r["point"]), r["adapter"], r["model"], r["ok"],
                r["error"] or "", r["input_tokens"], r["output_tokens"], _round(r["scheduled_s"]),
                _round(r["started_s"]), _ms(r["ttft_s"]), _ms(r["tpot_s"]),
                _ms(sum(itl) / len(itl) if itl else None), _ms(max(itl) if itl else None),
                _ms(r["e2e_s"])])


def write_points_csv(bench: dict, path: Path) -> None:
    """One row per load point and adapter ("all" is the whole point)."""
    rows = []
    for point in bench["points"]:
        groups = {"all": point["summary"], **point["per_adapter"]}
        for adapter, summary in groups.items():
            rows.append({"point": point["index"], "kind": point["kind"], "load": point["load"],
                         "adapter": adapter, **summary})
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["point"]
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _ms(seconds):
    return round(seconds * 1000, 3) if seconds is not None else None


def _round(value):
    return round(value, 6) if value is not None else None


# --- terminal ----------------------------------------------------------------------------

def print_summary(bench: dict) -> None:
    slo = bench.get("slo")
    columns = [load_head(bench), "ok", "err", "req/s", "tok/s", *LATENCY_HEADS, "KV %"]
    if slo:
        columns += ["SLO %", "goodput"]
    rows = []
    for point in bench["points"]:
        s = point["summary"]
        row = [f"{point['load']:g}" + ("*" if point["interrupted"] else ""),
               s["completed_count"], s["errors_count"], significant(s["request_throughput_per_s"]),
               significant(s["output_throughput_tokens_per_s"]), *_latencies(s),
               significant(point["server"].get("kv_cache_usage_peak_pct"))]
        if slo:
            mark = "pass" if point["slo_met"] else "fail"
            row += [f"{significant(s.get('slo_attainment_pct'))} {mark}",
                    significant(s.get("goodput_requests_per_s"))]
        rows.append(row)
    table(f"thrifty bench: {bench['label']} at {bench['target']['url']}\nlatencies in ms; "
          "p90, means and ITL are in the reports" + ("; * interrupted" if bench["interrupted"]
                                                     else ""), columns, rows)
    _print_adapters(bench)
    _print_errors(bench)
    memory = bench["memory"]
    known = [[title, significant(memory.get(key))] for key, title, _ in MEMORY
             if memory.get(key) is not None]
    if known:
        table("memory", ["figure", "value"], known)
    if slo:
        limits = ", ".join(f"{k}<={v:g}" for k, v in slo["limits"].items())
        best = bench["slo_best_load"]
        verdict = (f"highest {bench['profile']['kind']} load meeting it: {best:g}"
                   if best is not None else "no load point met it")
        table("SLO", ["verdict"], [[f"{limits} for {slo['attainment_pct']:g}% of requests: "
                                    f"{verdict}"]])


def load_head(bench: dict) -> str:
    return "conc." if bench["profile"]["kind"] == "concurrency" else "req/s in"


LATENCY_HEADS = ["TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50"]


def _latencies(summary: dict) -> list[str]:
    keys = ["ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "e2e_ms_p50"]
    return [significant(summary.get(key)) for key in keys]


def _print_adapters(bench: dict) -> None:
    rows = []
    for point in bench["points"]:
        if len(point["per_adapter"]) < 2:
            continue
        for adapter, s in point["per_adapter"].items():
            rows.append([f"{point['load']:g}", adapter, s["completed_count"], s["errors_count"],
                         significant(s["output_throughput_tokens_per_s"]), *_latencies(s)])
    if rows:
        columns = [load_head(bench), "adapter", "ok", "err", "tok/s", *LATENCY_HEADS]
        table("per adapter (ms)", columns, rows)


def _print_errors(bench: dict) -> None:
    kinds = [[point["label"], kind, e["count"], f"{e['first_s']:.1f}", f"{e['last_s']:.1f}"]
             for point in bench["points"]
             for kind, e in (point.get("errors_by_kind") or {}).items()]
    if kinds:
        table("failed requests by kind (counted in the figures above)",
              ["load", "kind", "count", "first at s", "last at s"], kinds)
    rows = [[point["label"], count, message] for point in bench["points"]
            for message, count in point["errors"].items()]
    if rows:
        table("errors as the server or the connection reported them",
              ["load", "count", "error"], rows)


# --- compare -----------------------------------------------------------------------------

def _load_key(point: dict) -> tuple[str, float]:
    """Points compare when their loads are equal: concurrency with concurrency, and arrival
    rate with arrival rate (Poisson or constant)."""
    return ("concurrency" if point["kind"] == "concurrency" else "rate", point["load"])


def compare(benches: list[dict]) -> dict:
    """Each run's headline metrics at the loads they share, and the change from the first
    run (the baseline), in percent."""
    shared = sorted(set.intersection(*[{_load_key(p) for p in b["points"]} for b in benches]))
    out = {"labels": [b["label"] for b in benches], "points": [], "memory": []}
    for kind, load in shared:
        summaries = [next(p["summary"] for p in b["points"] if _load_key(p) == (kind, load))
                     for b in benches]
        rows = [_compare_row(key, title, higher, [s.get(key) for s in summaries])
                for key, title, higher in HEADLINE]
        out["points"].append({"kind": kind, "load": load, "metrics": [r for r in rows if r]})
    memory_rows = [_compare_row(key, title, higher, [b["memory"].get(key) for b in benches])
                   for key, title, higher in MEMORY]
    out["memory"] = [r for r in memory_rows if r]
    return out


def _compare_row(key: str, title: str, higher_is_better: bool, values: list) -> dict | None:
    if all(v is None for v in values):
        return None
    base = values[0]
    deltas = [None if (v is None or not base) else round(100 * (v - base) / base, 2)
              for v in values]
    return {"metric": key, "title": title, "higher_is_better": higher_is_better,
            "values": values, "delta_pct": deltas}


def print_compare(result: dict, refs: list[str]) -> None:
    labels = result["labels"]
    heads = [labels[0]] + [f"{label} (Δ vs {labels[0]})" for label in labels[1:]]
    if not result["points"]:
        table("no shared load points", ["note"], [["The runs share no load point (same "
                                                    "profile kind and load); compare memory "
                                                    "only."]])
    for point in result["points"]:
        rows = [[row["title"], *_cells(row)] for row in point["metrics"]]
        table(f"{point['kind']} {point['load']:g}", ["metric", *heads], rows)
    if result["memory"]:
        table("memory", ["figure", *heads], [[r["title"], *_cells(r)] for r in result["memory"]])
    table("runs", ["label", "run"], [[label, ref] for label, ref in zip(labels, refs,
                                                                         strict=True)])


def _cells(row: dict) -> list[str]:
    cells = [significant(row["values"][0])]
    for value, delta in zip(row["values"][1:], row["delta_pct"][1:], strict=True):
        if delta is None:
            cells.append(significant(value))
            continue
        better = (delta > 0) == row["higher_is_better"]
        color = "green" if better and delta else "red" if delta else "white"
        cells.append(f"{significant(value)} [{color}]({delta:+.1f}%)[/{color}]")
    return cells
