"""The server monitor's libraries: /metrics parsing and process PSS/USS memory (NVML and the
server's GPUs: test_bench_gpus.py)."""

import json
import subprocess
import sys

import pytest

from thrifty.benchmark import memory, monitor

MB = 2**20
MODEL = 'model_name="Qwen/Qwen2.5-0.5B-Instruct"'
LORA_INFO = ('vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql,chat",'
             'waiting_lora_adapters=""} 1.7e+09')
CACHE_INFO = ('vllm:cache_config_info{block_size="16",cache_dtype="auto",'
              'enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",'
              'num_cpu_blocks="None",num_gpu_blocks="2912",swap_space="4"} 1.0')

# Trimmed from a vLLM v1 server's /metrics: process metrics, gauges per engine, counters with
# `_created` twins, a histogram and the info gauges whose labels carry the configuration.
VLLM_METRICS = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 12345.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.234567168e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",{MODEL}}} 3.0
vllm:num_requests_running{{engine="1",{MODEL}}} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",{MODEL}}} 1.0
# HELP vllm:kv_cache_usage_perc KV-Cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",{MODEL}}} 0.125
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{{engine="0",{MODEL}}} 2.0
vllm:num_preemptions_created{{engine="0",{MODEL}}} 1.7254e+09
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",{MODEL}}} 10.0
vllm:request_success_total{{engine="0",finished_reason="length",{MODEL}}} 6.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",{MODEL}}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",{MODEL}}} 12.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",{MODEL}}} 16.0
vllm:time_to_first_token_seconds_count{{engine="0",{MODEL}}} 16.0
vllm:time_to_first_token_seconds_sum{{engine="0",{MODEL}}} 2.5
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
{LORA_INFO}
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
{CACHE_INFO}
"""


def test_parse_vllm_metrics_histograms_counters_and_labels():
    samples = monitor.parse_prometheus(VLLM_METRICS)
    buckets = samples["vllm:time_to_first_token_seconds_bucket"]
    assert [(labels["le"], value) for labels, value in buckets] == [
        ("0.001", 0.0), ("0.5", 12.0), ("+Inf", 16.0)]
    assert samples["vllm:time_to_first_token_seconds_count"][0][1] == 16.0
    assert samples["vllm:time_to_first_token_seconds_sum"][0][1] == 2.5
    reasons = {labels["finished_reason"]: v for labels, v in samples["vllm:request_success_total"]}
    assert reasons == {"stop": 10.0, "length": 6.0}
    lora = samples["vllm:lora_requests_info"][0][0]
    assert lora["running_lora_adapters"] == "sql,chat" and lora["waiting_lora_adapters"] == ""
    assert samples["process_resident_memory_bytes"] == [({}, 1234567168.0)]
    assert all(isinstance(v, float) for rows in samples.values() for _, v in rows)
    state = monitor.vllm_state(samples)
    assert state == {"kv_cache_usage_ratio": 0.125, "preemptions_count": 2.0,
                     "running_count": 5.0, "waiting_count": 1.0, "kv_cache_tokens": 2912 * 16}


def test_parse_counter_without_total_suffix_and_bad_text():
    # Older vLLM typed the counter without `_total`; the parser names the sample with it.
    old = "# TYPE vllm:num_preemptions counter\nvllm:num_preemptions 4\n"
    assert monitor.vllm_state(monitor.parse_prometheus(old))["preemptions_count"] == 4.0
    assert monitor.parse_prometheus("") == {}
    with pytest.raises(ValueError):  # Monitor.scrape turns this into "no sample"
        monitor.parse_prometheus("vllm:num_requests_running{engine=0 3\n")


# A Python process holding ~50 MB of touched pages; with "fork" it forks once, so parent and
# child share those pages copy-on-write. It prints the pids, then waits for stdin to close.
_HOLDER = """\
import os, sys
block = b"x" * (50 * 2**20)
pids = [os.getpid()]
if sys.argv[1] == "fork":
    child = os.fork()
    if child == 0:
        sys.stdin.read()
        os._exit(0)
    pids.append(child)
print(*pids, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder():
    started = []

    def start(mode: str) -> list[int]:
        process = subprocess.Popen([sys.executable, "-c", _HOLDER, mode], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        return [int(pid) for pid in process.stdout.readline().split()]

    yield start
    for process in started:
        process.stdin.close()
        process.wait(10)


def test_process_memory_of_a_child_holding_50_mb(holder):
    (pid,) = holder("alone")
    figures = memory.process_tree_memory(pid)
    assert figures["measure"] == ("pss" if sys.platform.startswith("linux") else "uss")
    assert figures["memory_bytes"] >= 40 * MB
    assert figures["rss_bytes"] >= figures["memory_bytes"] - 4 * MB
    assert memory.process_tree_memory(2**22 + 12345) is None  # no such process


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_shared_pages_of_a_forked_child_count_once(holder):
    parent, child = holder("fork")
    whole = memory.process_tree_memory(parent)
    alone = memory.process_tree_memory(child)
    # RSS counts the ~50 MB shared block in both processes; PSS splits it between them (USS
    # leaves it out), so the tree's figure stays near one copy.
    assert whole["rss_bytes"] >= 2 * 45 * MB
    assert whole["memory_bytes"] < whole["rss_bytes"] - 40 * MB
    assert alone["memory_bytes"] < whole["memory_bytes"]
    if whole["measure"] == "pss":
        assert 40 * MB <= whole["memory_bytes"] < 2 * 45 * MB


def test_monitor_summary_names_the_memory_measure(holder):
    (pid,) = holder("alone")
    watcher = monitor.Monitor(None, server_pid=pid)
    watcher.sample()
    summary = watcher.summary()
    assert summary["server_memory_measure"] in ("pss", "uss")
    assert summary["server_memory_peak_gib"] >= 40 * MB / memory.GIB
    assert summary["server_rss_peak_gib"] >= 40 * MB / memory.GIB
    assert monitor.Monitor(None).summary()["server_memory_measure"] is None


def test_cli_help_imports_none_of_the_monitor_libraries():
    code = ("import sys, json\nfrom click.testing import CliRunner\nfrom thrifty.cli import cli\n"
            "CliRunner().invoke(cli, ['--help']); CliRunner().invoke(cli, ['bench', '--help'])\n"
            "print(json.dumps([m for m in ('prometheus_client', 'psutil', 'pynvml')"
            " if m in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
