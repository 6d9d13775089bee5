"""`thrifty bench` against a failing server (the timing server with injected faults): errors
are counted by kind and placed in time, and the run still reports."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bench_cli import bench, write_prompts

from thrifty.benchmark.timing_server import TimingServer
from thrifty.formats import openai_api


def test_server_errors_are_counted_and_results_kept(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=9)
    with TimingServer(ttft_s=0.005, itl_s=0.001, fail_every=3) as failing:
        done = bench(tmp_path, "--url", failing.url, "--prompts", prompts, "--concurrency", "1",
                     "--warmup", "0", "--json")
    assert done.returncode == 0, done.stderr
    point = json.loads(done.stdout)["bench"]["points"][0]
    assert point["summary"]["errors_count"] == 3 and point["summary"]["completed_count"] == 6
    assert point["errors"] == {"HTTP 500: injected failure": 3}
    assert point["errors_by_kind"]["HTTP 500"]["count"] == 3


def test_dropped_connections_are_counted(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=8)
    with TimingServer(ttft_s=0.005, itl_s=0.001, drop_every=2, drop_after_chunks=2) as dropping:
        done = bench(tmp_path, "--url", dropping.url, "--prompts", prompts, "--concurrency", "2",
                     "--warmup", "0", "--json")
    assert done.returncode == 0, done.stderr
    point = json.loads(done.stdout)["bench"]["points"][0]
    assert point["summary"]["errors_count"] == 4 and point["summary"]["completed_count"] == 4
    assert all("after 2 chunks" in message for message in point["errors"])
    assert point["errors_by_kind"][openai_api.DROPPED]["count"] == 4


def recorded(stdout: str) -> dict:
    """The whole bench result of a `--json` run, every request included (its run record)."""
    run = Path(json.loads(stdout)["run"])
    return json.loads((run / "result.json").read_text())["details"]["bench"]


def start_server_process(*args: str) -> tuple[subprocess.Popen, str]:
    """The timing server in a process of its own, which a test can kill -9 like a real one."""
    proc = subprocess.Popen([sys.executable, "-m", "thrifty.benchmark.timing_server",
                             "--port", "0", *args], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_a_server_killed_mid_run(tmp_path):
    """kill -9 of the server half-way: requests in flight are dropped, later ones refused; all
    are counted by kind after the last completed one, and the run still reports."""
    prompts = write_prompts(tmp_path / "p.jsonl", count=40, output_tokens=20)
    server, url = start_server_process("--ttft-ms", "10", "--itl-ms", "10")
    env = {**os.environ, "THRIFTY_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "thrifty", "bench", "--url", url,
                             "--prompts", prompts, "--concurrency", "2", "--warmup", "0",
                             "--sample-every", "0", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2.0)  # about ten requests of 0.2 s each, two at a time
    server.kill()
    server.wait()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    bench_data = recorded(out)
    point = bench_data["points"][0]
    summary, kinds = point["summary"], point["errors_by_kind"]
    assert summary["completed_count"] >= 4 and summary["completed_count"] < 40
    assert summary["completed_count"] + summary["errors_count"] == 40
    assert set(kinds) <= {openai_api.REFUSED, openai_api.DROPPED}
    assert kinds[openai_api.REFUSED]["count"] >= 1
    last_ok = max(r["started_s"] + r["e2e_s"] for r in bench_data["requests"] if r["ok"])
    assert kinds[openai_api.REFUSED]["first_s"] >= last_ok - 0.5


@pytest.mark.parametrize("status", [429, 503])
def test_a_storm_of_rejections_is_counted_and_placed_in_time(tmp_path, status):
    prompts = write_prompts(tmp_path / "p.jsonl", count=30, output_tokens=4)
    with TimingServer(ttft_s=0.01, itl_s=0.01, storm=(status, 11, 20)) as shedding:
        done = bench(tmp_path, "--url", shedding.url, "--prompts", prompts, "--concurrency",
                     "1", "--warmup", "0", "--sample-every", "0", "--json")
    assert done.returncode == 0, done.stderr
    bench_data = recorded(done.stdout)
    point = bench_data["points"][0]
    assert point["summary"]["completed_count"] == 20
    storm = point["errors_by_kind"][f"HTTP {status}"]
    assert storm["count"] == 10
    requests = bench_data["requests"]  # one at a time: the 11th to the 20th sent
    assert storm["first_s"] >= requests[9]["started_s"]
    assert storm["last_s"] <= requests[20]["started_s"] + 0.001  # (rounded to the ms)
    assert sum(bench_data["error_timeline"]["counts"][f"HTTP {status}"]) == 10
    report = (Path(json.loads(done.stdout)["run"]) / "report.html").read_text()
    assert "Failed requests over time" in report and f"HTTP {status}" in report


def test_a_stream_that_goes_silent_is_counted_as_stalled(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=9, output_tokens=4)
    with TimingServer(ttft_s=0.01, itl_s=0.01, stall_every=3, drop_after_chunks=2,
                      stall_s=5.0) as hanging:
        done = bench(tmp_path, "--url", hanging.url, "--prompts", prompts, "--concurrency",
                     "3", "--warmup", "0", "--timeout", "0.5", "--sample-every", "0")
    assert done.returncode == 0, done.stderr
    assert openai_api.STALLED in done.stdout  # the terminal's table of failed requests by kind
    result = json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())
    point = result["details"]["bench"]["points"][0]
    assert point["errors_by_kind"] == {openai_api.STALLED: point["errors_by_kind"][
        openai_api.STALLED]} and point["errors_by_kind"][openai_api.STALLED]["count"] == 3
    assert point["summary"]["completed_count"] == 6


def test_request_timeout_counts_as_an_error(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", count=2, output_tokens=2)
    with TimingServer(ttft_s=1.5, itl_s=0.01) as stuck:
        done = bench(tmp_path, "--url", stuck.url, "--prompts", prompts, "--concurrency", "2",
                     "--warmup", "0", "--timeout", "0.3", "--sample-every", "0", "--json")
    assert done.returncode == 0, done.stderr
    point = json.loads(done.stdout)["bench"]["points"][0]
    assert point["summary"]["errors_count"] == 2
    assert point["errors_by_kind"][openai_api.STALLED]["count"] == 2
    assert point["server"]["metrics_scrapes_count"] == 0  # sampling was off


