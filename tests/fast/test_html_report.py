"""The HTML bench report without a browser: its sections, chart data, escaping, no network.

tests/integration/test_reports_render.py draws it in Chromium."""

import copy
import json
import re

import pytest

from thrifty.benchmark.html_report import render_html, write_html

CAPTIONS = ["Latency percentiles vs load", "Per-token latency vs load", "Throughput vs load",
            "Per-adapter latency at concurrency 4", "Memory breakdown"]
CHARTS = 8  # TTFT, TPOT, tokens/s, requests/s, three per-adapter panels, memory
PLOTLY_JS_END = "window.Plotly = Plotly;"  # once per copy of plotly.js


def summary(load: float, errors: int = 0, slo: bool = True) -> dict:
    """Plausible metrics for a load point: latency and throughput grow with the load."""
    completed = 40 - errors
    values = {
        "requests_count": 40, "completed_count": completed, "errors_count": errors,
        "duration_s": 20.0 / load, "input_tokens_count": 128 * completed,
        "output_tokens_count": 48 * completed,
        "request_throughput_per_s": 2.0 * load, "output_throughput_tokens_per_s": 96.0 * load,
        "total_throughput_tokens_per_s": 352.0 * load,
    }
    for metric, base in (("ttft_ms", 50.0), ("tpot_ms", 7.0), ("itl_ms", 6.5), ("e2e_ms", 400.0)):
        for pct, factor in (("p50", 1.0), ("p90", 1.3), ("p99", 1.8), ("mean", 1.1)):
            values[f"{metric}_{pct}"] = round(base * factor * (1 + 0.4 * load), 3)
    if slo:
        values |= {"slo_attainment_pct": 100.0 - 5 * load, "goodput_requests_per_s": 1.9 * load}
    return values


def point(index: int, load: int, adapters: tuple[str, ...] = ("base", "history")) -> dict:
    errors = 2 if load == 4 else 0
    return {
        "index": index, "kind": "concurrency", "load": load, "label": f"concurrency {load}",
        "interrupted": False, "summary": summary(load, errors),
        "per_adapter": {name: summary(load + i * 0.5) for i, name in enumerate(adapters)},
        "errors": {"HTTP 500: boom": errors} if errors else {},
        "server": {"kv_cache_usage_peak_pct": 3.1 * load, "preemptions_count": 0,
                   "running_requests_peak_count": load, "waiting_requests_peak_count": 0,
                   "server_rss_peak_gib": 2.1, "gpu_memory_peak_gib": None,
                   "metrics_scrapes_count": 40},
        "slo_met": load <= 2,
    }


def realistic_bench() -> dict:
    """Three concurrency points, two adapters, memory known (schema version 1)."""
    return {
        "bench_schema_version": 1, "label": "smollm2-135m", "interrupted": False,
        "target": {"url": "http://127.0.0.1:8000/v1", "base_model": "smollm2-135m",
                   "started_by_thrifty": True},
        "hardware": "2-core CPU, no GPU",
        "workload": {"source": "synthetic", "input_tokens": "128",
                     "output_tokens": "uniform(32,64)", "prompts_file": None,
                     "requests_per_point": 40, "duration_s_per_point": None,
                     "warmup_requests": 2, "seed": 0, "ignore_eos": True,
                     "adapter_mix": {"base": 0.5, "history": 0.5}},
        "profile": {"kind": "concurrency", "loads": [1, 2, 4], "max_concurrency": None},
        "slo": {"limits": {"ttft_ms": 500.0, "tpot_ms": 50.0}, "attainment_pct": 90.0},
        "slo_best_load": 2,
        "memory": {"weights_gib": 0.16, "kv_cache_gib": 1.0, "kv_cache_tokens": 46592,
                   "max_concurrency_ratio": 22.75, "max_model_len_tokens": 2048,
                   "server_rss_peak_gib": 2.1, "gpu_memory_peak_gib": None,
                   "gpu_total_gib": None},
        "points": [point(0, 1), point(1, 2), point(2, 4)],
        "requests": [{"point": 0, "model": "smollm2-135m", "adapter": "base", "started_s": 0.01,
                      "ok": True, "error": None, "input_tokens": 128, "output_tokens": 64,
                      "ttft_s": 0.05, "e2e_s": 0.5, "itl_s": [0.007] * 63, "scheduled_s": None,
                      "tpot_s": 0.007}],
    }


def plots(page: str) -> list[tuple[str, list[dict], dict]]:
    """(chart title, traces, layout) of each Plotly.newPlot call, in page order."""
    decoder, found = json.JSONDecoder(), []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[\w-]+",\s*', page):
        data, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, re.compile(r",\s*").match(page, end).end())
        found.append((layout["title"]["text"], data, layout))
    return found


def chart(page: str, title: str, nth: int = 0) -> tuple[list[dict], dict]:
    """The traces and layout of the nth chart with this title."""
    return [(data, layout) for name, data, layout in plots(page) if name == title][nth]


def trace(page: str, title: str, name: str, nth: int = 0) -> dict:
    return next(t for t in chart(page, title, nth)[0] if t.get("name") == name)


def captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", page)


def test_report_has_every_figure_with_its_values():
    page = render_html(realistic_bench())
    assert captions(page) == CAPTIONS
    assert len(plots(page)) == CHARTS
    ttft = trace(page, "Time to first token", "TTFT p50")
    assert ttft["x"] == [1, 2, 4] and ttft["y"] == [70.0, 90.0, 130.0]
    assert trace(page, "Output tokens per second", "output tok/s")["y"] == [96.0, 192.0, 384.0]
    goodput = trace(page, "Completed requests per second", "goodput req/s")
    assert goodput["y"] == pytest.approx([1.9, 3.8, 7.6])
    _, layout = chart(page, "Output tokens per second")
    assert [a["text"] for a in layout["annotations"]] == ["SLO best: 2"]
    p99 = trace(page, "Time to first token", "history", nth=1)  # the per-adapter panel
    assert p99["x"] == ["p50", "p99"] and p99["y"] == [140.0, 252.0]
    bars, _ = chart(page, "End-to-end latency")
    assert [(b["name"], b["x"], b["y"]) for b in bars] == [
        ("base", ["p50"], [1040.0]), ("history", ["p50"], [1120.0])]
    memory, _ = chart(page, "Server memory at its peak")
    assert [b["x"][0] for b in memory] == pytest.approx([0.16, 1.0, 0.94])
    assert "Figures are measured by thrifty bench" in page and "schema version 1" in page
    assert "HTTP 500: boom" in page  # the errors table


def test_plotly_is_inlined_once_and_the_page_needs_no_network():
    page = render_html(realistic_bench())
    assert page.count(PLOTLY_JS_END) == 1
    assert page.index(PLOTLY_JS_END) < page.index('<div id="plot-1"')  # before the first chart
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert '<script src="http' not in page and "<link" not in page.lower()
    # Outside the scripts (plotly.js itself names SVG namespaces), nothing points elsewhere.
    markup = re.sub(r"<script\b.*?</script>", "", page, flags=re.DOTALL)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", markup, re.IGNORECASE)
    assert "@import" not in markup and "url(" not in markup


def test_user_strings_are_escaped():
    bench = realistic_bench()
    bench["label"] = "<b>x</b>"
    bench["hardware"] = '"><script>alert(1)</script>'
    bench["points"][0]["errors"] = {"<img src=x onerror=alert(1)>": 3}
    bench["workload"]["adapter_mix"] = {"base": 0.5, "<i>evil</i>": 0.5}
    bench["points"][2]["per_adapter"] = {"base": summary(4), "<i>evil</i>": summary(4)}
    page = render_html(bench)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<i>evil" not in page
    # plotly reads trace names as HTML: they arrive escaped, so they display as typed
    names = [t["name"] for t in chart(page, "End-to-end latency")[0]]
    assert names == ["base", "&lt;i&gt;evil&lt;/i&gt;"]
    assert page.count("<script") == CHARTS + 2  # plotly.js, its config, one per chart


def test_missing_metrics_do_not_crash():
    bench = realistic_bench()
    failed = bench["points"][1]
    failed["summary"] = {key: (None if isinstance(value, float) else value)
                         for key, value in failed["summary"].items()}
    failed["per_adapter"] = {}
    bench["points"].append({"index": 3, "kind": "concurrency", "load": 8, "label": "concurrency 8",
                            "interrupted": True, "summary": {}, "per_adapter": {},
                            "errors": {}, "server": None, "slo_met": None})
    bench["memory"] = {"weights_gib": None}
    bench["slo_best_load"] = None
    page = render_html(bench)
    assert "concurrency 8 (interrupted)" in page
    assert "No memory figure was reported" in page and "not reported" in page
    # a missing value breaks the line instead of being drawn as zero
    assert trace(page, "Time to first token", "TTFT p50")["y"] == [70.0, None, 130.0, None]


def test_all_requests_failed_draws_empty_charts():
    bench = realistic_bench()
    for p in bench["points"]:
        p["summary"] = {"requests_count": 40, "completed_count": 0, "errors_count": 40}
        p["per_adapter"] = {}
    page = render_html(bench)
    empty = chart(page, "Time to first token")
    assert empty[0] == [] and empty[1]["annotations"][0]["text"] == "no values to plot"
    assert "No adapter mix in this run" in page


def test_single_adapter_is_noted_instead_of_a_figure():
    bench = realistic_bench()
    bench["workload"]["adapter_mix"] = None
    bench["points"] = [point(0, 1, adapters=("base",))]
    page = render_html(bench)
    assert not any(c.startswith("Per-adapter latency at") for c in captions(page))
    assert "No adapter mix in this run" in page
    assert trace(page, "Time to first token", "TTFT p50")["y"] == [70.0]  # one point still drawn


def test_interrupted_run_shows_a_banner():
    bench = realistic_bench()
    assert 'class="banner"' not in render_html(bench)
    bench["interrupted"] = True
    page = render_html(bench)
    assert 'class="banner"' in page and "This run was interrupted" in page


def test_write_html_is_atomic(tmp_path):
    target = tmp_path / "reports" / "bench.html"
    write_html(realistic_bench(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["bench.html"]

    broken = copy.deepcopy(realistic_bench())
    broken["points"] = "not a list"
    with pytest.raises(AttributeError):
        write_html(broken, target)
    assert [p.name for p in target.parent.iterdir()] == ["bench.html"]  # old report kept
    assert "smollm2-135m" in target.read_text()


def test_memory_breakdown_uses_pss_over_the_rss_sum_when_measured():
    bench = realistic_bench()
    bench["memory"] |= {"server_memory_peak_gib": 1.5, "server_memory_measure": "pss"}
    page = render_html(bench)
    data, _ = chart(page, "Server memory at its peak")
    names = [t.get("name") for t in data]
    assert any("PSS peak" in (n or "") for n in names), names
    other = next(t for t in data if "other" in (t.get("name") or ""))
    assert other["x"][0] == pytest.approx(1.5 - 0.16 - 1.0) or other["y"][0] == pytest.approx(
        1.5 - 0.16 - 1.0)
    assert "server PSS peak" in page and "server RSS-sum peak" in page
