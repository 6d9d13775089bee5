"""A self-contained HTML report of one `thrifty bench` result (bench schema version 1).

Tables, plus interactive plotly charts (hover shows the values) with plotly.js inlined once,
so that the file opens in any browser with no network.
"""

import os
from pathlib import Path

from thrifty.core.files import write_text
from thrifty.core.html_page import (
    COLORS,
    Line,
    Plots,
    bar_chart,
    esc,
    figure,
    known,
    line_chart,
    no_figure,
    page,
    stacked_bar,
    table,
)
from thrifty.core.numbers import by_size

DASHES = {"p50": "solid", "p90": "dash", "p99": "dot"}  # percentiles differ by dash and colour
NOT_REPORTED = "not reported"


def load_axis_label(bench: dict) -> str:
    kind = (bench.get("profile") or {}).get("kind")
    return "concurrency (requests in flight)" if kind == "concurrency" else "request rate (req/s)"


def numeric_points(bench: dict) -> list[dict]:
    """The load points whose load is a number, in load order (the x axis of the charts)."""
    points = [p for p in bench.get("points") or [] if known(p.get("load"))]
    return sorted(points, key=lambda p: p["load"])


def series(points: list[dict], key: str, source: str = "summary") -> list[tuple[float, float]]:
    return [(p["load"], (p.get(source) or {}).get(key)) for p in points]


def slo_limit(key: str, limit: float) -> str:
    """'ttft_ms', 500 -> 'TTFT ≤ 500 ms'."""
    name, _, unit = key.rpartition("_")
    return f"{name.upper()} ≤ {limit:g} {unit}"


def workload_text(work: dict) -> str:
    if work.get("requests_per_point") is not None:
        per_point = f"{work['requests_per_point']} requests per point"
    else:
        per_point = f"{by_size(work.get('duration_s_per_point'), ' s')} per point"
    source = work.get("source", "?") + (f" ({work['prompts_file']})"
                                        if work.get("prompts_file") else "")
    return (f"{source} prompts, input {work.get('input_tokens', '?')} tokens, output "
            f"{work.get('output_tokens', '?')} tokens, {per_point}, "
            f"{work.get('warmup_requests', 0)} warm-up requests, seed {work.get('seed', '?')}, "
            f"ignore_eos {work.get('ignore_eos', '?')}")


def profile_text(profile: dict) -> str:
    loads = ", ".join(f"{load:g}" if known(load) else str(load)
                      for load in profile.get("loads") or [])
    limit = profile.get("max_concurrency")
    return (f"{profile.get('kind', '?')}, loads {loads}"
            + (f", at most {limit} in flight" if limit else ""))


def slo_text(bench: dict) -> str:
    slo = bench.get("slo")
    if not slo:
        return "none set"
    limits = ", ".join(slo_limit(key, limit) for key, limit in (slo.get("limits") or {}).items())
    best = bench.get("slo_best_load")
    attainment = slo.get("attainment_pct")
    attainment_text = f"{attainment:g}" if known(attainment) else "?"
    return (f"{limits} for at least {attainment_text}% of requests; best load: "
            + (f"{best:g}" if known(best) else "no load point met it"))


def header(bench: dict) -> str:
    target, mix = bench.get("target") or {}, (bench.get("workload") or {}).get("adapter_mix")
    facts = {
        "Target": f"{target.get('url', '?')} (base model {target.get('base_model', '?')})",
        "Server": ("started by thrifty" if target.get("started_by_thrifty")
                   else "already running (not started by thrifty)"),
        "Hardware": bench.get("hardware"),
        "Workload": workload_text(bench.get("workload") or {}),
        "Adapter mix": (", ".join(f"{name} {share:.0%}" for name, share in mix.items())
                        if mix else "base model only"),
        "Load profile": profile_text(bench.get("profile") or {}),
        "SLO": slo_text(bench),
        "Status": "interrupted" if bench.get("interrupted") else "complete",
    }
    rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(value)}</td></tr>"
                   for name, value in facts.items() if value is not None)
    banner = ('<p class="banner">This run was interrupted: the last load point may be partial '
              "and later points are missing.</p>" if bench.get("interrupted") else "")
    return (f"<h1>Benchmark: {esc(bench.get('label', 'unnamed'))}</h1>{banner}"
            f'<table class="facts">{rows}</table>')


SUMMARY_COLUMNS = [
    ("req/s", "summary", "request_throughput_per_s"),
    ("output tok/s", "summary", "output_throughput_tokens_per_s"),
    *[(f"TTFT {p} (ms)", "summary", f"ttft_ms_{p}") for p in ("p50", "p90", "p99")],
    *[(f"TPOT {p} (ms)", "summary", f"tpot_ms_{p}") for p in ("p50", "p90", "p99")],
    ("ITL p50 (ms)", "summary", "itl_ms_p50"),
    ("E2E p50 (ms)", "summary", "e2e_ms_p50"),
    ("E2E p99 (ms)", "summary", "e2e_ms_p99"),
]
SLO_COLUMNS = [("goodput (req/s)", "summary", "goodput_requests_per_s"),
               ("SLO attainment (%)", "summary", "slo_attainment_pct")]
SERVER_COLUMNS = [("KV-cache peak (%)", "server", "kv_cache_usage_peak_pct"),
                  ("preemptions", "server", "preemptions_count")]


def summary_table(bench: dict) -> str:
    columns = SUMMARY_COLUMNS + (SLO_COLUMNS if bench.get("slo") else []) + SERVER_COLUMNS
    rows = []
    for point in bench.get("points") or []:
        s = point.get("summary") or {}
        label = f"{point.get('label', '?')}{' (interrupted)' if point.get('interrupted') else ''}"
        cells = [by_size((point.get(src) or {}).get(key)) for _, src, key in columns]
        rows.append([label, f"{s.get('completed_count', 0)} / {s.get('errors_count', 0)}", *cells])
    if not rows:
        return '<p class="note">No load point was measured.</p>'
    return table(["load", "completed / errors", *[c[0] for c in columns]], rows)


def load_ticks(bench: dict) -> list[float] | None:
    """Concurrency loads are whole numbers: tick exactly at the measured ones."""
    if (bench.get("profile") or {}).get("kind") != "concurrency":
        return None
    return [p["load"] for p in numeric_points(bench)] or None


def latency_figures(bench: dict, plots: Plots) -> str:
    points, x_label, ticks = numeric_points(bench), load_axis_label(bench), load_ticks(bench)

    def percentile_lines(metric: str, name: str) -> list[Line]:
        return [Line(f"{name} {p}", series(points, f"{metric}_{p}"), COLORS[i], DASHES[p])
                for i, p in enumerate(("p50", "p90", "p99"))]

    ttft = line_chart("Time to first token", percentile_lines("ttft_ms", "TTFT"), x_label,
                      "TTFT (ms)", ticks)
    tpot_lines = percentile_lines("tpot_ms", "TPOT")
    tpot_lines.append(Line("ITL p50", series(points, "itl_ms_p50"), COLORS[3], "dashdot"))
    tpot = line_chart("Time per output token", tpot_lines, x_label, "TPOT / ITL (ms)", ticks)
    return (f'<div class="row">{figure(plots, "Latency percentiles vs load", [ttft])}'
            f'{figure(plots, "Per-token latency vs load", [tpot])}</div>')


def throughput_figure(bench: dict, plots: Plots) -> str:
    points, x_label, ticks = numeric_points(bench), load_axis_label(bench), load_ticks(bench)
    best = bench.get("slo_best_load")
    marker = (best, f"SLO best: {best:g}") if known(best) else None
    tokens = line_chart("Output tokens per second",
                        [Line("output tok/s", series(points, "output_throughput_tokens_per_s"),
                              COLORS[0])], x_label, "output tokens/s", ticks, marker)
    request_lines = [Line("requests/s", series(points, "request_throughput_per_s"), COLORS[1])]
    if bench.get("slo"):
        request_lines.append(Line("goodput req/s", series(points, "goodput_requests_per_s"),
                                  COLORS[2], "dash"))
    requests = line_chart("Completed requests per second", request_lines, x_label,
                          "requests/s", ticks, marker)
    return figure(plots, "Throughput vs load", [tokens, requests])


ADAPTER_PANELS = [("Time to first token", ["ttft_ms_p50", "ttft_ms_p99"], "TTFT (ms)"),
                  ("Time per output token", ["tpot_ms_p50"], "TPOT (ms)"),
                  ("End-to-end latency", ["e2e_ms_p50"], "E2E (ms)")]


def adapters_figure(bench: dict, plots: Plots) -> str:
    mixed = [p for p in numeric_points(bench) if len(p.get("per_adapter") or {}) > 1]
    if not mixed:
        return no_figure("Per-adapter latency", "No adapter mix in this run.")
    point = mixed[-1]  # the highest load, where adapters compete the most
    adapters = point["per_adapter"]
    panels = [bar_chart(title, [key.rsplit("_", 1)[1] for key in keys],
                        [(name, [(stats or {}).get(key) for key in keys])
                         for name, stats in adapters.items()], y_label)
              for title, keys, y_label in ADAPTER_PANELS]
    return figure(plots, f"Per-adapter latency at {point.get('label', '?')}", panels)


def memory_facts(memory: dict, peaks: dict[str, float | None]) -> str:
    gib = {"weights": memory.get("weights_gib"), "KV-cache pool": memory.get("kv_cache_gib"),
           **peaks,
           "GPU total": memory.get("gpu_total_gib")}
    counts = {"KV cache tokens": memory.get("kv_cache_tokens"),
              "max concurrency ratio": memory.get("max_concurrency_ratio"),
              "max model length (tokens)": memory.get("max_model_len_tokens")}
    facts = {name: by_size(value, " GiB") for name, value in gib.items() if value is not None}
    facts |= {name: by_size(value) for name, value in counts.items() if value is not None}
    rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(facts.get(name, NOT_REPORTED))}</td></tr>"
                   for name in [*gib, *counts])
    return f'<table class="facts">{rows}</table>'


def server_peaks_table(points: list[dict]) -> str:
    keys = ("kv_cache_usage_peak_pct", "preemptions_count", "running_requests_peak_count",
            "waiting_requests_peak_count")
    rows = [[p.get("label", "?"), *(by_size((p.get("server") or {}).get(key)) for key in keys)]
            for p in points]
    return table(["load", "KV-cache peak (%)", "preemptions", "running peak", "waiting peak"],
                 rows) if rows else ""


def memory_figure(bench: dict, plots: Plots) -> str:
    memory, points = bench.get("memory") or {}, bench.get("points") or []

    def peak(key: str) -> float | None:
        """The bench-wide peak, else the highest peak any load point saw."""
        values = [memory.get(key), *((p.get("server") or {}).get(key) for p in points)]
        return max((v for v in values if v is not None), default=None)

    weights, kv = memory.get("weights_gib"), memory.get("kv_cache_gib")
    gpu_peak, rss_peak = peak("gpu_memory_peak_gib"), peak("server_rss_peak_gib")
    # PSS counts the pages the server's processes share once; the RSS sum counts them in each.
    measure = (memory.get("server_memory_measure") or "pss").upper()
    shared_peak = peak("server_memory_peak_gib")
    # On a GPU the KV pool and weights live in GPU memory; on a CPU in the server's memory.
    whole, whole_name = ((gpu_peak, "GPU peak") if gpu_peak is not None else
                         (shared_peak, f"{measure} peak") if shared_peak is not None else
                         (rss_peak, "RSS-sum peak"))
    other = whole - weights - kv if None not in (whole, weights, kv) else None
    segments = [(name, value) for name, value in [
        ("weights", weights), ("KV-cache pool", kv),
        (f"other ({whole_name} − weights − KV)", other)] if known(value) and value > 0]
    peaks = {f"server {measure} peak": shared_peak,
             "server RSS-sum peak (shared pages per process)": rss_peak,
             "GPU memory peak": gpu_peak}
    details = memory_facts(memory, peaks) + server_peaks_table(points)
    if memory.get("gpu_scope"):
        details += ("<p>The server's GPUs (GPU figures count only these): "
                    f"{esc(memory['gpu_scope'])}.</p>")
    if not segments:
        return no_figure("Memory breakdown", "No memory figure was reported.") + details
    gpu_total = memory.get("gpu_total_gib")
    total_line = (f"GPU total {by_size(gpu_total, ' GiB')}", gpu_total) if gpu_total else None
    chart = stacked_bar("Server memory at its peak", segments, " GiB", total_line)
    missing = [name for name, value in [("weights", weights), ("KV-cache pool", kv),
                                        ("other", other)] if value is None]
    note = f"{', '.join(missing)}: {NOT_REPORTED}" if missing else ""
    return figure(plots, "Memory breakdown", [chart], note) + details


def errors_section(bench: dict, plots: Plots) -> str:
    points = bench.get("points") or []
    messages = sorted({m for p in points for m in (p.get("errors") or {})})
    if not messages:
        return ""
    kinds = [[p.get("label", "?"), kind, str(e["count"]), f"{e['first_s']:.1f}",
              f"{e['last_s']:.1f}"] for p in points
             for kind, e in (p.get("errors_by_kind") or {}).items()]
    rows = [[message, *(str((p.get("errors") or {}).get(message, "")) for p in points)]
            for message in messages]
    return ("<h2>Errors</h2>" + errors_over_time(bench, plots)
            + table(["load", "kind", "count", "first at s", "last at s"], kinds)
            + table(["error", *(p.get("label", "?") for p in points)], rows))


def errors_over_time(bench: dict, plots: Plots) -> str:
    """Failed requests per time bin and kind: when a storm of 429s came, when the server went."""
    timeline = bench.get("error_timeline") or {}
    width = timeline.get("bin_s")
    if not width:
        return ""
    lines = [Line(kind, [(i * width, count) for i, count in enumerate(counts)],
                  COLORS[n % len(COLORS)]) for n, (kind, counts) in
             enumerate(sorted(timeline["counts"].items()))]
    chart = line_chart("Failed requests over time", lines,
                       "seconds since the benchmark started (bin start)",
                       f"failed requests per {width} s")
    return figure(plots, "Errors over time", [chart], "")


def render_html(bench: dict) -> str:
    """The whole report as one HTML document (no external resources)."""
    plots = Plots()
    sections = [header(bench), "<h2>Summary</h2>", summary_table(bench),
                latency_figures(bench, plots), throughput_figure(bench, plots),
                adapters_figure(bench, plots), memory_figure(bench, plots),
                errors_section(bench, plots)]
    footer = (f"<footer>Figures are measured by thrifty bench · bench schema version "
              f"{esc(bench.get('bench_schema_version', '?'))}</footer>")
    return page(f"thrifty bench: {bench.get('label', 'unnamed')}", "".join(sections) + footer)


def write_html(bench: dict, path: str | os.PathLike) -> None:
    """Render the report, then write it atomically: a failed render leaves the old one."""
    write_text(Path(path), render_html(bench))
