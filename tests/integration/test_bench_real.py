"""`thrifty bench` with the real vLLM server, SmolLM2-135M, the enwiki corpus and the demo
adapters: a run where thrifty starts the server, runs against a `thrifty serve` server, and the
offline latency mode."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cli_helpers import thrifty, thrifty_json
from interrupt_helpers import kill_and_check_nothing_left, running, start, tagged, wait_for

from thrifty.assets import models
from thrifty.benchmark import workload
from thrifty.serve import demo_adapters


def bench_json(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "thrifty", "bench", *map(str, args), "--json"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_prompts_are_cut_to_exact_token_lengths():
    tokenizer = workload.load_tokenizer(models.DEFAULT_MODEL)
    spec = workload.parse_length("uniform(16,300)", "--input-tokens")
    prompts = workload.synthetic_prompts(tokenizer, 40, spec, workload.parse_length("8", "-"), 0)
    for p in prompts:
        assert len(tokenizer.encode(p.text, add_special_tokens=False).ids) == p.input_tokens
    lengths = [p.input_tokens for p in prompts]
    drawn = workload.synthetic_prompts(tokenizer, 40, spec, workload.parse_length("8", "-"), 0)
    assert lengths == [p.input_tokens for p in drawn]  # seeded
    assert sum(1 for p in prompts if p.input_tokens in range(16, 301)) == 40


def test_bench_model_with_adapters_mix_slo_and_memory(tmp_path):
    """thrifty starts the server with an adapter, sweeps two concurrencies with a 50/50 mix,
    and stops the server afterwards."""
    demo = demo_adapters.trained(demo_adapters.default_dir())
    if "history" not in demo:
        pytest.fail("The demo adapters are missing: `make test-integration` trains them.")
    # first a run killed with -9 once vLLM's server is up: the server, its engine and the
    # `thrifty serve` between them all end, and the run below starts its own on a free port
    killed = start(["bench", "--model", models.DEFAULT_MODEL, "--requests", "50"],
                   tmp_path / "killed.log")
    wait_for(lambda: running(killed, "thrifty.libs.vllm_server"), killed)
    kill_and_check_nothing_left(killed)
    out = bench_json(tmp_path, "--model", models.DEFAULT_MODEL, "--adapter",
                     f"history={demo['history']}", "--adapter-mix", "history=0.5,base=0.5",
                     "--concurrency", "1,2", "--requests", "6", "--input-tokens", "32",
                     "--output-tokens", "32", "--warmup", "2", "--slo",
                     "ttft_ms=60000,tpot_ms=10000", "--sample-every", "0.1")
    bench = out["bench"]
    assert bench["target"]["started_by_thrifty"]
    for point in bench["points"]:
        s = point["summary"]
        assert (s["completed_count"], s["errors_count"]) == (6, 0)
        # the server's own count: prompts cut to exactly 32 tokens, outputs of exactly 32
        assert s["input_tokens_count"] == 6 * 32 and s["output_tokens_count"] == 6 * 32
        assert set(point["per_adapter"]) == {"base", "history"}
        assert point["server"]["kv_cache_usage_peak_pct"] is not None
        # sampled while it ran: a point lasts at least 96 decode steps (seconds on a CPU),
        # sampled every 0.1 s (at the default 1 s a short point can fall between two samples)
        sampled = point["server"]
        assert sampled["running_requests_peak_count"] >= 1, (
            f"{sampled['metrics_scrapes_count']} scrapes in {s['duration_s']} s saw no request "
            "running")
        assert point["server"]["server_rss_peak_gib"] > 0.3
        assert s["ttft_ms_p50"] > 0 and s["tpot_ms_p50"] > 0 and s["itl_ms_p50"] > 0
    assert bench["slo_best_load"] == 2
    memory = bench["memory"]
    assert memory["weights_gib"] > 0.1 and memory["kv_cache_gib"] > 0
    assert memory["kv_cache_tokens"] > 1000 and memory["max_concurrency_ratio"] > 1
    assert memory["preemptions_count"] == 0
    run = Path(out["run"])
    for name in ("report.html", "requests.csv", "points.csv", "prompts.jsonl", "result.json"):
        assert (run / name).is_file(), name
    with pytest.raises(urllib.error.URLError):  # the server is gone
        urllib.request.urlopen(bench["target"]["url"].removesuffix("/v1") + "/health",
                               timeout=5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-serve")
    env = {**os.environ, "THRIFTY_RUNS": str(work / "runs")}
    with (work / "serve.log").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "thrifty", "serve", models.DEFAULT_MODEL,
                                 "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=err,
                                text=True, env=env)
    line = proc.stdout.readline()
    if not line.strip():
        pytest.fail(f"thrifty serve did not start:\n{(work / 'serve.log').read_text()[-3000:]}")
    yield json.loads(line)["url"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)


def test_bench_url_poisson_rate_and_compare(tmp_path, served):
    first = bench_json(tmp_path, "--url", served, "--rate", "2", "--requests", "6",
                       "--input-tokens", "normal(48,8)", "--output-tokens", "8", "--label",
                       "poisson")
    second = bench_json(tmp_path, "--url", served, "--rate", "2", "--arrivals", "constant",
                        "--requests", "6", "--input-tokens", "normal(48,8)", "--output-tokens",
                        "8", "--label", "constant")
    for out in (first, second):
        point = out["bench"]["points"][0]
        assert point["summary"]["completed_count"] == 6
        assert not out["bench"]["target"]["started_by_thrifty"]
        assert out["bench"]["memory"]["kv_cache_tokens"] > 1000  # from /metrics
    requests = json.loads((Path(second["run"]) / "result.json").read_text())[
        "details"]["bench"]["requests"]
    times = sorted(r["scheduled_s"] for r in requests)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([0.5] * 5, abs=1e-6)  # constant arrivals, 2 per second
    compared = thrifty("bench", "compare", first["run"], second["run"], "--json")
    result = json.loads(compared.stdout)
    assert result["labels"] == ["poisson", "constant"] and result["points"][0]["load"] == 2


def test_adapter_mix_unknown_to_a_real_server(tmp_path, served):
    done = thrifty("bench", "--url", served, "--adapter-mix", "history=1", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "'history', which the server at" in done.stderr


def test_offline_latency_mode(tmp_path):
    """After a SIGTERM (a CI timeout, a container stop) of a first run while vLLM's engine is
    up: exit 143 and no engine process left; then a run that completes."""
    killed = start(["bench", "latency", "--model", models.DEFAULT_MODEL], tmp_path / "k.log")
    wait_for(lambda: len(tagged(killed.tag)) >= 3, killed)  # CLI, worker, vLLM's EngineCore
    kill_and_check_nothing_left(killed, signal.SIGTERM)
    assert killed.returncode == 128 + signal.SIGTERM
    env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "thrifty", "bench", "latency", "--model",
                           models.DEFAULT_MODEL, "--batch-size", "1,4", "--input-tokens", "32",
                           "--output-tokens", "8", "--iterations", "2", "--json"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = json.loads(done.stdout)["cases"]
    assert [c["batch_size"] for c in cases] == [1, 4]
    for case in cases:
        assert case["latency_ms_p50"] > case["prefill_ms_median"] > 0
        assert case["decode_step_ms_mean"] > 0 and len(case["latencies_s"]) == 2


# --- the cost model on this machine: probe, size, calibrate on a real bench run, predict it
def test_fit_counts_the_real_models_parameters():
    manifest = json.loads((models.prepared_dir("smollm2-135m") / models.MANIFEST).read_text())
    fitted = thrifty_json("fit", "smollm2-135m", "--gpu", "t4")
    assert fitted["results"][0]["shape"]["params"] == manifest["parameters_params"]


def test_probe_calibrate_and_check_on_a_real_bench_run(tmp_path, served):
    probe = thrifty_json("doctor", "--probe")["probe"]
    assert probe["device"] == "cpu" and probe["bandwidth_gb_per_s"] > 0.5
    # a CPU without native bf16 (AVX2 only) multiplies bf16 dozens of times slower than fp32
    assert probe["fp32_tflop_per_s"] > 0.005 and probe["bf16_tflop_per_s"] > 0

    env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "thrifty", "bench", "--url", served,
                           "--concurrency", "1,3", "--requests", "4", "--input-tokens", "96",
                           "--output-tokens", "16", "--warmup", "1", "--json"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)["run"]
    # each load point gets its own prompts (vLLM's prefix cache would skip repeated ones)
    prompts = (Path(run) / "prompts.jsonl").read_text().splitlines()
    assert len(prompts) == 8 and len(set(prompts)) == 8

    calibration_file = tmp_path / "cal.json"
    calibrated = thrifty_json("cost", "calibrate", run, "--model", "smollm2-135m", "--out",
                              calibration_file)
    eff = calibrated["efficiency"]
    assert eff["memory"] > 0 and eff["compute"] > 0 and eff["overhead_ms"] > 0
    points = calibrated["fit"]["points"]
    assert [p["load"] for p in points] == [1, 3]
    # three efficiencies fitted to six medians: the fit must be close, not exact
    assert calibrated["fit"]["worst_error_pct"] < 40, points

    checked = thrifty_json("cost", "check", run, "--calibration", calibration_file, "--model",
                           "smollm2-135m")
    assert checked["points"] == points
