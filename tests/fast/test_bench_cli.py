"""`thrifty bench` end to end against the timing server (a real HTTP server on 127.0.0.1 with
known delays and injectable failures): bad input, failing servers, Ctrl-C, reports, compare."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from thrifty.benchmark import target as targets
from thrifty.benchmark.timing_server import TimingServer
from thrifty.formats.openai_api import ServerClient


def write_prompts(path: Path, count: int = 12, output_tokens: int = 6) -> Path:
    with path.open("w") as out:
        for i in range(count):
            out.write(json.dumps({"prompt": f"prompt number {i} " * 4,
                                  "output_tokens": output_tokens}) + "\n")
    return path


def bench(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "thrifty", "bench", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_run(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


@pytest.fixture
def server():
    with TimingServer(ttft_s=0.01, itl_s=0.002, models=("timing-model", "support", "legal")) as s:
        yield s


def test_full_run_writes_every_report(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl")
    done = bench(tmp_path, "--url", server.url + "/v1", "--prompts", prompts,
                 "--concurrency", "1,3", "--adapter-mix", "support=0.5,base=0.5",
                 "--slo", "ttft_ms=5000,tpot_ms=1000", "--warmup", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    bench_data = out["bench"]
    assert [p["load"] for p in bench_data["points"]] == [1, 3]
    for point in bench_data["points"]:
        assert point["summary"]["completed_count"] == 12
        assert point["summary"]["output_tokens_count"] == 72
        assert set(point["per_adapter"]) == {"base", "support"}
        assert point["slo_met"] is True
        # /metrics sampled at the start of every point and once more at its end
        assert point["server"]["metrics_scrapes_count"] >= 2
    assert bench_data["slo_best_load"] == 3
    run = Path(out["run"])
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "ok"
    assert len(result["details"]["bench"]["requests"]) == 24  # warm-up excluded
    assert (run / "requests.csv").read_text().count("\n") == 25
    assert "support" in (run / "points.csv").read_text()
    assert "<svg" in (run / "report.html").read_text()
    # the models the requests named: the base for 'base', the adapter's own name otherwise
    sent = {t["model"] for t in server.timings_as_dicts()}
    assert sent == {"timing-model", "support"}


def test_terminal_summary(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", count=4)
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert "thrifty bench: timing-model" in done.stdout and "Run folder:" in done.stdout


def wait_for_requests(server: TimingServer, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while len(server.timings_as_dicts()) < count:
        assert time.monotonic() < deadline, "the benchmark sent nothing"
        time.sleep(0.05)


def test_ctrl_c_keeps_what_was_measured(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=200, output_tokens=10)
    with TimingServer(ttft_s=0.01, itl_s=0.01) as slow:
        env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs")}
        # A shell's background job inherits SIGINT ignored; give the child the default
        # disposition, as a terminal's foreground process has.
        proc = subprocess.Popen([sys.executable, "-m", "thrifty", "bench", "--url", slow.url,
                                 "--prompts", prompts, "--concurrency", "2", "--warmup", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for_requests(slow, 10)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted: kept" in err and "Traceback" not in err
    run = one_run(tmp_path)
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted"
    bench_data = result["details"]["bench"]
    assert bench_data["interrupted"] and bench_data["points"][0]["interrupted"]
    kept = bench_data["requests"]
    assert 6 <= len(kept) < 200 and all(r["ok"] for r in kept)
    assert (run / "report.html").is_file() and (run / "requests.csv").is_file()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_clean_error(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode not in (0, 130)
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def test_unreachable_url(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl")
    done = bench(tmp_path, "--url", f"http://127.0.0.1:{closed_port()}/v1", "--prompts", prompts)
    assert_clean_error(done, "No server answers at", "Check the URL")


@pytest.mark.parametrize("args, phrases", [
    (["--slo", "ttft=500"], ["unknown limit 'ttft'"]),
    (["--slo", "ttft_ms:500"], ["is not KEY=MILLISECONDS"]),
    (["--adapter-mix", "a=0.5,b"], ["is not NAME=WEIGHT"]),
    (["--adapter-mix", "a=0,b=0"], ["add up to zero"]),
    (["--input-tokens", "uniform(9,3)"], ["HIGH must not be below LOW"]),
    (["--concurrency", "0,4"], ["positive whole numbers"]),
    (["--concurrency", "2", "--rate", "3"], ["either --concurrency", "or --rate"]),
    (["--adapter", "x=/tmp"], ["--adapter and --adapters-dir start adapters with --model"]),
])
def test_bad_options_fail_before_any_request(tmp_path, server, args, phrases):
    prompts = write_prompts(tmp_path / "p.jsonl")
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts, *args)
    assert_clean_error(done, *phrases)
    assert server.timings_as_dicts() == []


def test_url_and_model_are_exclusive(tmp_path):
    assert_clean_error(bench(tmp_path, "--prompts", "x.jsonl"), "exactly one of --url")


def test_adapter_in_the_mix_that_the_server_lacks(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl")
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts,
                 "--adapter-mix", "support=0.5,medical=0.5")
    assert_clean_error(done, "'medical', which the server at", "It serves support, legal")
    assert server.timings_as_dicts() == []


def test_compare_two_runs(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", count=6)
    runs = []
    for label in ("first", "second"):
        done = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "2",
                     "--label", label, "--json")
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout)["run"])
    done = bench(tmp_path, "compare", *runs, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["labels"] == ["first", "second"]
    metrics = {m["metric"]: m for m in result["points"][0]["metrics"]}
    assert metrics["ttft_ms_p50"]["delta_pct"][0] == 0.0
    assert metrics["ttft_ms_p50"]["delta_pct"][1] is not None
    table = bench(tmp_path, "compare", *runs)
    assert table.returncode == 0 and "Δ vs first" in table.stdout
    assert_clean_error(bench(tmp_path, "compare", runs[0]), "at least two runs")
    assert_clean_error(bench(tmp_path, "compare", runs[0], str(tmp_path)),
                       "neither a `thrifty bench` run folder")


def test_duration_cycles_prompts_until_time_is_up(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", count=3, output_tokens=4)
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "2",
                 "--duration", "1.5", "--warmup", "0", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)["bench"]
    summary = out["points"][0]["summary"]
    assert out["workload"]["requests_per_point"] is None
    assert summary["completed_count"] > 6  # more than the 3 prompts: they were cycled
    assert 1.4 < summary["duration_s"] < 3.0


def test_open_loop_respects_max_concurrency(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=8, output_tokens=3)
    with TimingServer(ttft_s=0.03, itl_s=0.01) as slow:
        done = bench(tmp_path, "--url", slow.url, "--prompts", prompts, "--rate", "100",
                     "--arrivals", "constant", "--max-concurrency", "1", "--warmup", "0",
                     "--json")
        timings = sorted(slow.timings_as_dicts(), key=lambda t: t["arrived_s"])
    assert done.returncode == 0, done.stderr
    for earlier, later in zip(timings, timings[1:], strict=False):
        assert later["arrived_s"] >= earlier["finished_s"] - 0.002  # never two in flight
    records = json.loads((Path(json.loads(done.stdout)["run"]) / "result.json").read_text())[
        "details"]["bench"]["requests"]
    lag = max(r["started_s"] - r["scheduled_s"] for r in records)
    assert lag > 0.1  # arrivals every 10 ms waited for the one free slot


def test_model_that_cannot_be_served_quotes_serves_error(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=2)
    done = bench(tmp_path, "--model", str(tmp_path / "no-such-model"), "--prompts", prompts)
    assert_clean_error(done, "`thrifty serve` could not start the model for the benchmark",
                       "is not a built-in model")
    run = one_run(tmp_path)
    assert json.loads((run / "result.json").read_text())["status"] == "failed"


def prompts_sent(server: TimingServer) -> list[tuple[str, str | None]]:
    """(prompt, cache_salt) of every completion the server saw: vLLM serves a pair it saw
    before from its prefix cache."""
    return [(t["prompt"], t["cache_salt"]) for t in server.timings_as_dicts()]


def test_replayed_prompts_are_never_served_from_the_prefix_cache(tmp_path, server):
    """--prompts replays the same prompts at every load point (and the warm-up resends the
    first ones): each point carries its own cache_salt, so vLLM computes every prefill."""
    prompts = write_prompts(tmp_path / "p.jsonl", count=4, output_tokens=3)
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "1,2",
                 "--warmup", "2", "--json")
    assert done.returncode == 0, done.stderr
    sent = prompts_sent(server)
    assert len(sent) == 2 + 4 + 4
    assert len(set(sent)) == len(sent)
    workload = json.loads(done.stdout)["bench"]["workload"]
    assert workload["prefix_cache_isolation"] == "cache_salt per load point"
    again = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "1",
                  "--warmup", "0", "--json")  # a second run, same seed, same server
    assert again.returncode == 0, again.stderr
    assert len(set(prompts_sent(server))) == len(sent) + 4


def test_duration_gives_each_pass_over_the_prompts_its_own_salt(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", count=3, output_tokens=3)
    done = bench(tmp_path, "--url", server.url, "--prompts", prompts, "--concurrency", "2",
                 "--duration", "0.6", "--warmup", "0", "--json")
    assert done.returncode == 0, done.stderr
    sent = prompts_sent(server)
    assert len(sent) > 6  # cycled at least twice over the three prompts
    assert len(set(sent)) == len(sent)
    assert json.loads(done.stdout)["bench"]["workload"]["prefix_cache_isolation"] == (
        "cache_salt per load point and per pass over the prompts")


def test_server_started_for_the_run_is_sent_the_key_it_demands(tmp_path, monkeypatch):
    """THRIFTY_API_KEY set: `thrifty serve`, started for `bench --model`, demands the key it
    finds in its environment, so the benchmark must send that same key (a real server that
    demands a key stands in for the vLLM one)."""
    monkeypatch.setenv("THRIFTY_API_KEY", "key-from-the-environment")
    process = targets.ServeProcess(["smollm2-135m"], tmp_path, "key-from-the-environment")
    demanded = process.env["THRIFTY_API_KEY"]
    log = tmp_path / "vllm-server.log"
    log.write_text("INFO Model loading took 0.2534 GiB and 1.2 seconds\n")
    with TimingServer(ttft_s=0.001, itl_s=0.001, api_key=demanded) as served:
        target = process.target({"url": served.url + "/v1", "server_pid": os.getpid(),
                                 "flags": {"tensor_parallel_size": 1, "reasons": {}},
                                 "log": str(log)})
        answer = ServerClient(target.url, target.api_key).complete(target.base_model, "hi", 2)
    assert answer.output_tokens == 2
    assert target.started_by_thrifty and target.startup_memory["weights_gib"] == 0.2534
    without = targets.ServeProcess(["smollm2-135m"], tmp_path, None)
    assert "THRIFTY_API_KEY" not in without.env  # no key: the server demands none


def test_url_server_that_demands_a_key(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=2, output_tokens=2)
    with TimingServer(ttft_s=0.001, itl_s=0.001, api_key="k1") as locked:
        refused = bench(tmp_path, "--url", locked.url, "--prompts", prompts)
        done = bench(tmp_path, "--url", locked.url, "--prompts", prompts, "--api-key", "k1",
                     "--warmup", "0", "--json")
    assert_clean_error(refused, "refused the request (HTTP 401)", "--api-key")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bench"]["points"][0]["summary"]["completed_count"] == 2
