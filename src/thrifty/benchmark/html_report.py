"""A self-contained HTML report of one `thrifty bench` result (bench schema version 1).

Tables, plus charts drawn here as inline SVG, so that the file opens in any browser with no
network and no library. A small inline script marks each figure `data-drawn="yes"` once the
browser has laid out its data marks, which lets a headless browser test prove the charts draw.
"""

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

from thrifty.core.files import write_text

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 16, 48  # room for tick labels and axis titles
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
DASHES = {"p50": "", "p90": "7 3", "p99": "2 3"}  # percentiles differ by dash as well as colour
NOT_REPORTED = "not reported"

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px}
h1{margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ddd}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:8px 12px;font-weight:600}
.facts td:first-child{color:#555;padding-right:16px}
table.data{margin:8px 0;border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:13px}
table.data th,table.data td{border:1px solid #ddd;padding:3px 7px;text-align:right}
table.data th:first-child,table.data td:first-child{text-align:left;min-width:9em}
figure.plot{margin:16px 0;display:flex;flex-wrap:wrap;gap:24px}
.row{display:flex;flex-wrap:wrap;column-gap:32px} .row>figure.plot{flex:1 1 560px}
figure.plot figcaption,.caption{width:100%;font-weight:600;font-size:15px;margin:16px 0 0}
.panel h4{margin:0 0 4px} .legend span{margin-right:14px;white-space:nowrap}
.legend i{display:inline-block;width:18px;height:4px;margin:0 5px 3px 0;vertical-align:middle}
svg text{font-size:11px;fill:#333} .note{color:#666;font-style:italic;width:100%}
footer{margin-top:40px;color:#777;font-size:12px}
"""

# Marks a figure as drawn when at least one data mark has a non-empty box after layout.
SCRIPT = """
window.addEventListener("load", function () {
  document.querySelectorAll("figure.plot").forEach(function (fig) {
    var box = null, drawn = 0;
    fig.querySelectorAll(".mark").forEach(function (mark) {
      var b = mark.getBBox();
      if (b.width <= 0 && b.height <= 0) return;
      drawn += 1;
      box = box ? {x0: Math.min(box.x0, b.x), y0: Math.min(box.y0, b.y),
                   x1: Math.max(box.x1, b.x + b.width), y1: Math.max(box.y1, b.y + b.height)}
                : {x0: b.x, y0: b.y, x1: b.x + b.width, y1: b.y + b.height};
    });
    fig.setAttribute("data-drawn", drawn > 0 ? "yes" : "no");
    fig.setAttribute("data-marks", String(drawn));
    if (box) fig.setAttribute("data-bbox", [box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0]
                               .map(Math.round).join(" "));
  });
});
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def known(value: object) -> bool:
    """A number that can be drawn (None, NaN and infinity cannot)."""
    return isinstance(value, int | float) and math.isfinite(value)


def fmt(value: float | None, unit: str = "") -> str:
    """A number with as many decimals as its size deserves; None reads as a dash."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}{unit}"


def nice_ticks(top: float, count: int = 5, integer: bool = False) -> list[float]:
    """Ticks from 0 up to at least `top`, in steps of 1, 2 or 5 times a power of ten."""
    top = top if top > 0 else 1.0
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw - 1e-12)
    step = max(step, 1) if integer else step
    return [round(i * step, 10) for i in range(math.ceil(top / step - 1e-9) + 1)]


def scale(top: float, out_from: float, out_to: float):
    return lambda value: out_from + value / top * (out_to - out_from)


def legend(entries: list[tuple[str, str]]) -> str:
    items = "".join(f'<span><i style="background:{color}"></i>{esc(name)}</span>'
                    for name, color in entries)
    return f'<div class="legend">{items}</div>'


def panel(title: str, entries: list[tuple[str, str]], svg_body: str, height: int = HEIGHT) -> str:
    return (f'<div class="panel"><h4>{esc(title)}</h4>{legend(entries)}'
            f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">'
            f"{svg_body}</svg></div>")


def figure(kind: str, title: str, panels: list[str], note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return (f'<figure class="plot" data-plot="{esc(kind)}"><figcaption>{esc(title)}</figcaption>'
            f'{"".join(panels)}{note_html}</figure>')


def no_figure(title: str, note: str) -> str:
    """What stands in for a figure that has nothing to draw."""
    return f'<p class="caption">{esc(title)}</p><p class="note">{esc(note)}</p>'


def axes(x_ticks, y_ticks, sx, sy, x_label: str, y_label: str, x_names=None) -> str:
    """Grid, axis lines, tick labels and axis titles. x_names: category labels for bars."""
    parts = []
    for tick in y_ticks:
        y = sy(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e5e5e5"/><text x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{tick:g}</text>')
    for tick, name in zip(x_ticks, x_names or [f"{t:g}" for t in x_ticks], strict=True):
        x = sx(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" '
                     f'y2="{HEIGHT - BOTTOM + 5}" stroke="#555"/><text x="{x:.1f}" '
                     f'y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{esc(name)}</text>')
    parts.append(f'<path d="M{LEFT},{TOP}V{HEIGHT - BOTTOM}H{WIDTH - RIGHT}" fill="none" '
                 f'stroke="#555"/><text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" '
                 f'text-anchor="middle">{esc(x_label)}</text><text transform="translate(14,'
                 f'{(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
                 f"{esc(y_label)}</text>")
    return "".join(parts)


@dataclass
class Line:
    name: str
    points: list[tuple[float, float | None]]  # (x, y); None y values are skipped
    color: str
    dash: str = ""


def line_chart(title: str, lines: list[Line], x_label: str, y_label: str,
               integer_x: bool = False, x_marker: tuple[float, str] | None = None) -> str:
    """Lines with a marker on every known value; x_marker draws a labelled vertical line."""
    drawable = [(x, y) for line in lines for x, y in line.points if known(y)]
    if not drawable:
        return panel(title, [], f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
                                "no values to plot</text>")
    x_ticks = nice_ticks(max(x for x, _ in drawable), integer=integer_x)
    y_ticks = nice_ticks(max(y for _, y in drawable))
    sx = scale(x_ticks[-1], LEFT, WIDTH - RIGHT)
    sy = scale(y_ticks[-1], HEIGHT - BOTTOM, TOP)
    body = [axes(x_ticks, y_ticks, sx, sy, x_label, y_label)]
    if x_marker is not None:
        x = sx(x_marker[0])
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
                    f'stroke="#888" stroke-dasharray="4 4"/><text x="{x + 4:.1f}" '
                    f'y="{TOP + 10}">{esc(x_marker[1])}</text>')
    for line in lines:
        # A missing value breaks the line rather than being bridged by it.
        path, pen_down = [], False
        for x, y in line.points:
            if known(y):
                path.append(f"{'L' if pen_down else 'M'}{sx(x):.1f},{sy(y):.1f}")
            pen_down = known(y)
        body.append(f'<path class="mark" d="{" ".join(path)}" fill="none" stroke="{line.color}"'
                    f' stroke-width="2" stroke-dasharray="{line.dash}"/>')
        body += [f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" '
                 f'fill="{line.color}"/>' for x, y in line.points if known(y)]
    return panel(title, [(line.name, line.color) for line in lines], "".join(body))


def bar_chart(title: str, groups: list[str], series: list[tuple[str, list[float | None]]],
              y_label: str) -> str:
    """Grouped vertical bars: one group per category, one coloured bar per series in it."""
    values = [v for _, vs in series for v in vs if known(v)]
    y_ticks = nice_ticks(max(values, default=0.0))
    sy = scale(y_ticks[-1], HEIGHT - BOTTOM, TOP)
    group_width = (WIDTH - LEFT - RIGHT) / max(len(groups), 1)
    bar_width = min(group_width * 0.8 / max(len(series), 1), 56)  # wide bars read as areas
    centres = [LEFT + (i + 0.5) * group_width for i in range(len(groups))]
    body = [axes(centres, y_ticks, lambda x: x, sy, "", y_label, x_names=groups)]
    for s, (name, vs) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        for g, value in enumerate(vs):
            x = centres[g] + (s - len(series) / 2) * bar_width
            if not known(value):
                body.append(f'<text x="{x + bar_width / 2:.1f}" y="{HEIGHT - BOTTOM - 4}" '
                            'text-anchor="middle">n/a</text>')
                continue
            y = sy(value)
            body.append(f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{bar_width - 2:.1f}"'
                        f' height="{HEIGHT - BOTTOM - y:.1f}" fill="{color}"><title>{esc(name)}: '
                        f'{fmt(value)}</title></rect><text x="{x + bar_width / 2:.1f}" '
                        f'y="{y - 3:.1f}" text-anchor="middle">{fmt(value)}</text>')
    entries = [(name, COLORS[s % len(COLORS)]) for s, (name, _) in enumerate(series)]
    return panel(title, entries, "".join(body))


def stacked_bar(title: str, segments: list[tuple[str, float]], unit: str,
                total: tuple[str, float] | None = None) -> str:
    """One horizontal bar split into segments, each labelled with its value; `total`
    (label, value) extends the axis to a capacity and draws it as a dashed limit."""
    height, bar_top, bar_height = 150, 40, 44
    used = sum(value for _, value in segments)
    ticks = nice_ticks(max(used, total[1] if total else 0.0))
    sx = scale(ticks[-1], LEFT, WIDTH - RIGHT)
    body, start = [], 0.0
    for i, (name, value) in enumerate(segments):
        x0, x1 = sx(start), sx(start + value)
        body.append(f'<rect class="mark" x="{x0:.1f}" y="{bar_top}" width="{x1 - x0:.1f}" '
                    f'height="{bar_height}" fill="{COLORS[i % len(COLORS)]}"><title>{esc(name)}'
                    f": {fmt(value, unit)}</title></rect>")
        # Labels alternate above and below the bar so that narrow segments stay readable.
        y = bar_top - 6 if i % 2 == 0 else bar_top + bar_height + 14
        body.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y}" text-anchor="middle">'
                    f"{fmt(value, unit)}</text>")
        start += value
    for tick in ticks:
        body.append(f'<text x="{sx(tick):.1f}" y="{height - 22}" text-anchor="middle">'
                    f"{tick:g}</text>")
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{height - 36}" y2="{height - 36}" '
                f'stroke="#555"/><text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 4}" '
                f'text-anchor="middle">{esc(unit.strip())}</text>')
    if total:
        x = sx(total[1])
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bar_top - 18}" y2="{height - 36}" '
                    f'stroke="#333" stroke-dasharray="4 3"/><text x="{x - 4:.1f}" '
                    f'y="{bar_top - 22}" text-anchor="end">{esc(total[0])}</text>')
    entries = [(name, COLORS[i % len(COLORS)]) for i, (name, _) in enumerate(segments)]
    return panel(title, entries, "".join(body), height=height)


# --- the report's sections -----------------------------------------------------------------

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
        per_point = f"{fmt(work.get('duration_s_per_point'), ' s')} per point"
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


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="data"><tr>{head}</tr>{body}</table>'


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
        cells = [fmt((point.get(src) or {}).get(key)) for _, src, key in columns]
        rows.append([label, f"{s.get('completed_count', 0)} / {s.get('errors_count', 0)}", *cells])
    if not rows:
        return '<p class="note">No load point was measured.</p>'
    return table(["load", "completed / errors", *[c[0] for c in columns]], rows)


def latency_figures(bench: dict) -> str:
    points, x_label = numeric_points(bench), load_axis_label(bench)
    concurrency = (bench.get("profile") or {}).get("kind") == "concurrency"

    def percentile_lines(metric: str, name: str) -> list[Line]:
        return [Line(f"{name} {p}", series(points, f"{metric}_{p}"), COLORS[i], DASHES[p])
                for i, p in enumerate(("p50", "p90", "p99"))]

    ttft = line_chart("Time to first token", percentile_lines("ttft_ms", "TTFT"), x_label,
                      "TTFT (ms)", integer_x=concurrency)
    tpot_lines = percentile_lines("tpot_ms", "TPOT")
    tpot_lines.append(Line("ITL p50", series(points, "itl_ms_p50"), COLORS[3], "1 4"))
    tpot = line_chart("Time per output token", tpot_lines, x_label, "TPOT / ITL (ms)",
                      integer_x=concurrency)
    return (f'<div class="row">{figure("latency", "Latency percentiles vs load", [ttft])}'
            f'{figure("tpot", "Per-token latency vs load", [tpot])}</div>')


def throughput_figure(bench: dict) -> str:
    points, x_label = numeric_points(bench), load_axis_label(bench)
    concurrency = (bench.get("profile") or {}).get("kind") == "concurrency"
    best = bench.get("slo_best_load")
    marker = (best, f"SLO best: {best:g}") if known(best) else None
    tokens = line_chart("Output tokens per second",
                        [Line("output tok/s", series(points, "output_throughput_tokens_per_s"),
                              COLORS[0])], x_label, "output tokens/s", concurrency, marker)
    request_lines = [Line("requests/s", series(points, "request_throughput_per_s"), COLORS[1])]
    if bench.get("slo"):
        request_lines.append(Line("goodput req/s", series(points, "goodput_requests_per_s"),
                                  COLORS[2], "6 3"))
    requests = line_chart("Completed requests per second", request_lines, x_label,
                          "requests/s", concurrency, marker)
    return figure("throughput", "Throughput vs load", [tokens, requests])


ADAPTER_PANELS = [("Time to first token", ["ttft_ms_p50", "ttft_ms_p99"], "TTFT (ms)"),
                  ("Time per output token", ["tpot_ms_p50"], "TPOT (ms)"),
                  ("End-to-end latency", ["e2e_ms_p50"], "E2E (ms)")]


def adapters_figure(bench: dict) -> str:
    mixed = [p for p in numeric_points(bench) if len(p.get("per_adapter") or {}) > 1]
    if not mixed:
        return no_figure("Per-adapter latency", "No adapter mix in this run.")
    point = mixed[-1]  # the highest load, where adapters compete the most
    adapters = point["per_adapter"]
    panels = [bar_chart(title, [key.rsplit("_", 1)[1] for key in keys],
                        [(name, [(stats or {}).get(key) for key in keys])
                         for name, stats in adapters.items()], y_label)
              for title, keys, y_label in ADAPTER_PANELS]
    return figure("adapters", f"Per-adapter latency at {point.get('label', '?')}", panels)


def memory_facts(memory: dict, rss_peak: float | None, gpu_peak: float | None) -> str:
    gib = {"weights": memory.get("weights_gib"), "KV-cache pool": memory.get("kv_cache_gib"),
           "server RSS peak": rss_peak, "GPU memory peak": gpu_peak,
           "GPU total": memory.get("gpu_total_gib")}
    counts = {"KV cache tokens": memory.get("kv_cache_tokens"),
              "max concurrency ratio": memory.get("max_concurrency_ratio"),
              "max model length (tokens)": memory.get("max_model_len_tokens")}
    facts = {name: fmt(value, " GiB") for name, value in gib.items() if value is not None}
    facts |= {name: fmt(value) for name, value in counts.items() if value is not None}
    rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(facts.get(name, NOT_REPORTED))}</td></tr>"
                   for name in [*gib, *counts])
    return f'<table class="facts">{rows}</table>'


def server_peaks_table(points: list[dict]) -> str:
    keys = ("kv_cache_usage_peak_pct", "preemptions_count", "running_requests_peak_count",
            "waiting_requests_peak_count")
    rows = [[p.get("label", "?"), *(fmt((p.get("server") or {}).get(key)) for key in keys)]
            for p in points]
    return table(["load", "KV-cache peak (%)", "preemptions", "running peak", "waiting peak"],
                 rows) if rows else ""


def memory_figure(bench: dict) -> str:
    memory, points = bench.get("memory") or {}, bench.get("points") or []

    def peak(key: str) -> float | None:
        """The bench-wide peak, else the highest peak any load point saw."""
        values = [memory.get(key), *((p.get("server") or {}).get(key) for p in points)]
        return max((v for v in values if v is not None), default=None)

    weights, kv = memory.get("weights_gib"), memory.get("kv_cache_gib")
    gpu_peak, rss_peak = peak("gpu_memory_peak_gib"), peak("server_rss_peak_gib")
    # On a GPU the KV pool and weights live in GPU memory; on a CPU they live in the RSS.
    whole, whole_name = (gpu_peak, "GPU peak") if gpu_peak is not None else (rss_peak, "RSS peak")
    other = whole - weights - kv if None not in (whole, weights, kv) else None
    segments = [(name, value) for name, value in [
        ("weights", weights), ("KV-cache pool", kv),
        (f"other ({whole_name} − weights − KV)", other)] if known(value) and value > 0]
    details = memory_facts(memory, rss_peak, gpu_peak) + server_peaks_table(points)
    if not segments:
        return no_figure("Memory breakdown", "No memory figure was reported.") + details
    gpu_total = memory.get("gpu_total_gib")
    chart = stacked_bar("Server memory at its peak", segments, " GiB",
                        (f"GPU total {fmt(gpu_total, ' GiB')}", gpu_total) if gpu_total else None)
    missing = [name for name, value in [("weights", weights), ("KV-cache pool", kv),
                                        ("other", other)] if value is None]
    note = f"{', '.join(missing)}: {NOT_REPORTED}" if missing else ""
    return figure("memory", "Memory breakdown", [chart], note) + details


def errors_section(bench: dict) -> str:
    points = bench.get("points") or []
    messages = sorted({m for p in points for m in (p.get("errors") or {})})
    if not messages:
        return ""
    rows = [[message, *(str((p.get("errors") or {}).get(message, "")) for p in points)]
            for message in messages]
    return "<h2>Errors</h2>" + table(["error", *(p.get("label", "?") for p in points)], rows)


def render_html(bench: dict) -> str:
    """The whole report as one HTML document (no external resources)."""
    sections = [header(bench), "<h2>Summary</h2>", summary_table(bench), latency_figures(bench),
                throughput_figure(bench), adapters_figure(bench), memory_figure(bench),
                errors_section(bench)]
    footer = (f"<footer>Figures are measured by thrifty bench · bench schema version "
              f"{esc(bench.get('bench_schema_version', '?'))}</footer>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>thrifty bench: {esc(bench.get('label', 'unnamed'))}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}{footer}"
            f"<script>{SCRIPT}</script></body></html>\n")


def write_html(bench: dict, path: str | os.PathLike) -> None:
    """Render the report, then write it atomically: a failed render leaves the old one."""
    write_text(Path(path), render_html(bench))
