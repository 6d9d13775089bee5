"""The load generator against the model-free timing server: known delays in, measured timings
out; injected failures, dropped connections and unknown models come back as failed records."""

import json
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from thrifty.benchmark import metrics, monitor
from thrifty.benchmark.loadgen import Job, LoadRun, Profile
from thrifty.benchmark.timing_server import TimingServer
from thrifty.benchmark.workload import Prompt
from thrifty.formats.openai_api import ServerClient, ServerError

MODEL = "timing-model"
pytestmark = pytest.mark.timeout(30)


def jobs(count: int, output_tokens: int = 8, model: str = MODEL) -> list[Job]:
    return [Job(model, "base", Prompt(f"request {i} says hello", 4, output_tokens))
            for i in range(count)]


def run_load(server: TimingServer, profile: Profile, work: list[Job]) -> list:
    run = LoadRun(server.url, api_key=None, timeout_s=10.0)
    run.run_point(0, profile, work, seed=0)
    return run.records


def test_closed_loop_measures_the_known_delays():
    ttft_s, itl_s = 0.02, 0.005
    with TimingServer(ttft_s=ttft_s, itl_s=itl_s) as server:
        records = run_load(server, Profile("concurrency", 4), jobs(20, output_tokens=8))
        timings = list(server.timings)
    assert len(records) == 20
    assert all(r.ok for r in records), metrics.error_kinds(records)
    # Lower bounds only: the server waits at least its delays, and a loaded machine only
    # adds time (an upper bound on wall-clock time fails on a busy CI machine).
    for r in records:
        assert r.ttft_s >= ttft_s
        assert r.output_tokens == 8 and r.input_tokens == 4  # the server's usage counts
        assert len(r.itl_s) == 7
    gaps = sorted(gap for r in records for gap in r.itl_s)
    assert gaps[len(gaps) // 2] >= itl_s * 0.8
    summary = metrics.aggregate(records)
    assert summary["completed_count"] == 20 and summary["output_tokens_count"] == 160
    # the server's own timeline: one entry per request, the first chunk after ttft
    assert len(timings) == 20 and all(t.outcome == "done" for t in timings)
    assert all(t.first_chunk_s - t.body_read_s >= ttft_s for t in timings)
    # one keep-alive connection per worker: only the first request of each connects
    assert sum(t.connection_request == 1 for t in timings) == 4


def test_injected_server_errors_are_counted():
    with TimingServer(ttft_s=0.005, itl_s=0.001, fail_every=3) as server:
        records = run_load(server, Profile("concurrency", 4), jobs(20, output_tokens=4))
    failed = [r for r in records if not r.ok]
    assert len(records) == 20 and len(failed) == 6  # requests 3, 6, ..., 18
    assert all(r.error.startswith("HTTP 500") and "injected failure" in r.error
               for r in failed)
    assert all(r.output_tokens == 4 for r in records if r.ok)


def test_dropped_connections_fail_and_the_client_reconnects():
    # one worker, so that the request after each drop is the same worker's next one
    with TimingServer(ttft_s=0.005, itl_s=0.001, drop_every=2, drop_after_chunks=2) as server:
        records = run_load(server, Profile("concurrency", 1), jobs(10, output_tokens=6))
        timings = list(server.timings)
    failed = [r for r in records if not r.ok]
    assert len(records) == 10 and len(failed) == 5  # requests 2, 4, ..., 10
    for r in failed:
        assert "after 2 chunks" in r.error and r.ttft_s is not None and len(r.itl_s) == 1
    assert all(r.output_tokens == 6 for r in records if r.ok)
    assert [t.number for t in timings if t.outcome == "dropped"] == [2, 4, 6, 8, 10]
    # each request after a drop came on a fresh connection, and succeeded
    assert all(t.connection_request == 1 and t.outcome == "done"
               for t in timings if t.number % 2 == 1)


def test_unknown_model_is_a_404_like_vllm():
    with TimingServer(ttft_s=0.005, itl_s=0.001) as server:
        records = run_load(server, Profile("concurrency", 2), jobs(4, model="no-such-model"))
        assert server.timings == []  # nothing was admitted
    assert len(records) == 4 and not any(r.ok for r in records)
    assert all(r.error.startswith("HTTP 404") and "`no-such-model` does not exist" in r.error
               for r in records)


def test_open_loop_constant_rate_keeps_its_schedule():
    with TimingServer(ttft_s=0.005, itl_s=0.001) as server:
        records = run_load(server, Profile("constant", 20), jobs(20, output_tokens=4))
    assert len(records) == 20 and all(r.ok for r in records), metrics.error_kinds(records)
    scheduled = sorted(r.scheduled_s for r in records)
    gaps = [b - a for a, b in zip(scheduled, scheduled[1:], strict=False)]
    assert gaps == pytest.approx([0.05] * 19, abs=1e-9)
    lags = [r.started_s - r.scheduled_s for r in records]
    assert min(lags) >= 0  # never sent early; how late depends on the machine's load


def test_models_health_metrics_and_plain_completions():
    with TimingServer(ttft_s=0.005, itl_s=0.001, models=(MODEL, "support")) as server:
        client = ServerClient(server.url)
        assert client.healthy()
        cards = client.models()
        assert [c["id"] for c in cards] == [MODEL, "support"]
        assert cards[1]["parent"] == MODEL
        answer = client.complete("support", "one two three", max_tokens=5)
        assert answer.text == "xxxxx" and answer.output_tokens == 5
        streamed = client.stream(MODEL, "one two", max_tokens=3)
        assert streamed.output_tokens == 3 and len(streamed.token_times_s) == 3
        state = monitor.vllm_state(monitor.parse_prometheus(client.metrics_text()))
    assert state["running_count"] == 0 and state["waiting_count"] == 0
    assert state["preemptions_count"] == 0 and state["kv_cache_usage_ratio"] == 0
    assert state["kv_cache_tokens"] == 65536


def test_server_client_stream_fails_as_the_load_generator_does():
    # the same parser: a dropped stream and an injected error are failures, with their cause
    with TimingServer(ttft_s=0.005, itl_s=0.001, drop_every=2, drop_after_chunks=1) as server:
        client = ServerClient(server.url)
        assert client.stream(MODEL, "one", max_tokens=3).output_tokens == 3  # request 1
        with pytest.raises(ServerError, match="closed the stream after 1 chunks"):
            client.stream(MODEL, "two", max_tokens=3)  # request 2 is dropped
    with (TimingServer(ttft_s=0.005, itl_s=0.001, fail_every=1) as server,
          pytest.raises(ServerError, match="HTTP 500: injected failure") as failed):
        ServerClient(server.url).stream(MODEL, "one", max_tokens=3)
    assert failed.value.status == 500


def test_metrics_count_requests_in_flight():
    with TimingServer(ttft_s=0.4, itl_s=0.001) as server:
        background = threading.Thread(
            target=run_load, args=(server, Profile("concurrency", 2), jobs(2)), daemon=True)
        background.start()
        client, state = ServerClient(server.url), {}
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            state = monitor.vllm_state(monitor.parse_prometheus(client.metrics_text()))
            if state["running_count"] == 2:
                break
            time.sleep(0.01)
        background.join(5.0)
    assert state["running_count"] == 2
    assert state["kv_cache_usage_ratio"] == pytest.approx(2 / 4096)  # one block each


def test_runs_standalone_and_prints_its_url():
    command = [sys.executable, "-m", "thrifty.benchmark.timing_server", "--port", "0",
               "--ttft-ms", "1", "--itl-ms", "1", "--model", "standalone"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as response:
            assert json.loads(response.read())["data"][0]["id"] == "standalone"
    finally:
        process.terminate()
        process.wait(5)
