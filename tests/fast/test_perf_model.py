"""The roofline's newer terms: tensor-parallel all-reduces over the catalog's interconnect,
8-bit tensor rates, mixture-of-experts reads, and vLLM's prefix cache in the replay."""

from dataclasses import replace

import pytest

from thrifty.cost import model_shape
from thrifty.cost.perf_model import Efficiency, Hardware, decode_step, step_seconds
from thrifty.cost.simulate import Prompt, Workload, simulate, summarize

EFF = Efficiency(memory=0.8, compute=0.5, overhead_ms=2.0)


def test_tensor_parallel_pays_for_its_all_reduces_more_over_pcie(cat):
    shape = model_shape.load("llama-3.1-70b")
    nvlink, pcie = (Hardware.from_gpu(cat.find(g)) for g in ("h100-sxm", "h100-pcie"))
    step = decode_step(32, 1000)
    one = step_seconds(shape, nvlink, EFF, step, tp=1)
    four = step_seconds(shape, nvlink, EFF, step, tp=4)
    # splitting the weights four ways saves most of the step, not all of it
    assert one / 4 < four < one / 2
    comm_nvlink = nvlink.allreduce_seconds(shape, 32, 4)
    comm_pcie = pcie.allreduce_seconds(shape, 32, 4)
    assert comm_nvlink > 0 and comm_pcie > 2 * comm_nvlink
    assert nvlink.allreduce_seconds(shape, 32, 1) == 0


def test_fp8_runs_at_the_fp8_rate_where_the_gpu_has_one(cat):
    shape = model_shape.variant(model_shape.load("llama-3.1-8b"), "fp8")
    h100, a100 = (Hardware.from_gpu(cat.find(g)) for g in ("h100-sxm", "a100-80gb"))
    assert h100.low_precision_rate(shape) == pytest.approx(2 * h100.bf16_tflops * 1e12, rel=0.01)
    # no FP8 tensor cores: vLLM runs FP8 weights weight-only, at the 16-bit rate
    assert a100.low_precision_rate(shape) == pytest.approx(a100.bf16_tflops * 1e12)
    bf16 = model_shape.load("llama-3.1-8b")
    flops = 1e15
    assert h100.matmul_seconds(shape, flops) == pytest.approx(
        h100.matmul_seconds(bf16, flops) / 2, rel=0.01)


def test_a_moe_decode_step_reads_more_weights_with_a_bigger_batch(cat):
    config = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000,
              "num_local_experts": 8, "num_experts_per_tok": 2}
    shape = model_shape.from_config(config, "mixtral-like")
    hw = Hardware.from_gpu(cat.find("h100-sxm"))
    # memory-bound decode: time per sequence falls with the batch, but a batch of 1 reads a
    # quarter of the experts and one of 16 nearly all of them
    one, sixteen = (step_seconds(shape, hw, EFF, decode_step(b, 500)) for b in (1, 16))
    assert sixteen > 2 * one
    dense = replace(shape, experts=0, moe_layers=0, intermediate=8 * 14336)  # same weights
    assert step_seconds(shape, hw, EFF, decode_step(1, 500)) < \
        step_seconds(dense, hw, EFF, decode_step(1, 500))


def _cycling_prompts(requests: int, unique: int) -> list[Prompt]:
    return [Prompt(text=n % unique, group=(n % unique) // 10, shared_tokens=100)
            for n in range(requests)]


def test_prefix_cache_serves_repeated_prompts_and_thrashes_when_too_small(cat):
    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("h100-sxm"))
    arrivals = [n * 0.2 for n in range(300)]
    lengths = [(600, 20)] * 300

    def ttft_ms(cache_tokens):
        work = Workload(lengths, arrivals_s=arrivals, prompts=_cycling_prompts(300, 100),
                        prefix_cache_tokens=cache_tokens)
        done = simulate(shape, hw, EFF, work)
        return summarize(done[100:])["ttft_ms_mean"]  # after the first pass

    off = ttft_ms(None)
    roomy = ttft_ms(200_000)  # 100 prompts x 600 tokens fit
    tight = ttft_ms(50_000)  # they do not: a cycle through LRU never hits
    assert roomy < 0.7 * off  # the prompt is skipped; the wait for a step and its delivery stay
    assert tight == pytest.approx(off)


def test_each_gpu_row_says_which_efficiencies_it_used(isolated_home, run_cli, tmp_path):
    import json
    fitted = tmp_path / "fitted.toml"
    fitted.write_text('[[gpu]]\nid = "h100-sxm"\nefficiency_memory = 0.9\n'
                      'efficiency_compute = 0.6\nstep_overhead_ms = 1.0\nrequest_lag_ms = 5.0\n'
                      'efficiency_source = "a test fit"\n')
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", "--gpu",
                     "h100-sxm,l40s", "--variants", "bf16", "--catalog", fitted, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {r["gpu"]: r for r in report["options"]}
    assert "fitted on h100-sxm" in rows["h100-sxm"]["figures"]
    assert rows["h100-sxm"]["efficiency"]["memory"] == 0.9
    # the L40S has no fit of its own: it borrows the H100's and says so
    assert "h100-sxm's fit applied to l40s" in rows["l40s"]["figures"]
    assert rows["l40s"]["efficiency"]["overhead_ms"] == 1.0
    given = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", "--gpu", "l40s",
                    "--variants", "bf16", "--catalog", fitted, "--efficiency",
                    "memory=0.5,compute=0.5,overhead_ms=2", "--json")
    row = json.loads(given.stdout)["options"][0]
    assert "--efficiency" in row["figures"] and row["efficiency"]["memory"] == 0.5
