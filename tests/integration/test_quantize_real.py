"""Quantization of the real SmolLM2-135M with llm-compressor, checked in the real vLLM."""

import json
import subprocess

import pytest
from cli_helpers import needs_w4a16_kernel, thrifty, thrifty_json
from interrupt_helpers import job_log_says, kill_and_check_nothing_left, start, wait_for

from thrifty.assets import models
from thrifty.core import engines

BASE = models.DEFAULT_MODEL


@pytest.fixture(scope="module")
def rtn(tmp_path_factory):
    """RTN in the default scheme (W4A16_ASYM), verified in vLLM (no calibration, so it is the
    quickest real checkpoint)."""
    out = tmp_path_factory.mktemp("q") / "rtn-w4"
    return out, thrifty_json("quantize", BASE, "--method", "rtn", "--out", out)


@needs_w4a16_kernel
def test_rtn_checkpoint_is_recorded_and_served_by_vllm(rtn):
    out, manifest = rtn
    assert manifest["verified"] is True
    assert manifest["verify_sample"].startswith("The capital of France is")
    assert manifest["group_size"] == 64 and "128 does not divide" in manifest["group_size_note"]
    assert manifest["layers_count"] == 210  # 30 layers x 7 projections; lm_head kept
    assert manifest["versions"]["llmcompressor"] == "0.14.0.1"
    assert manifest["base_weights_bytes"] / manifest["weights_bytes"] > 2.5
    config = json.loads((out / "config.json").read_text())
    weights = config["quantization_config"]["config_groups"]["group_0"]["weights"]
    # the default scheme has zero points, and vLLM's CPU WNA16 kernel served them above
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 64, False)
    on_disk = json.loads((out / "thrifty-quantize.json").read_text())
    assert on_disk["verified"] is True and "QuantizationModifier" in on_disk["recipe"]
    assert not list(out.parent.glob(".*partial*"))  # no temporary folder left behind


@needs_w4a16_kernel
def test_a_quantized_checkpoint_teaches_through_vllm(rtn, tmp_path):
    """The offline teacher signal of `thrifty distill` comes from whatever vLLM serves."""
    out, _ = rtn
    result = thrifty_json("distill", "--teacher", out, "--student", BASE, "--capture-only",
                          "--steps", "2", "--batch-size", "2", "--seq-len", "64",
                          "--out", tmp_path / "d")
    assert result["details"]["capture"]["shards_captured_count"] == 1
    assert 80 <= result["measured"]["signal_bytes_per_token"] < 90


@needs_w4a16_kernel
def test_gptq_with_calibration_then_eval_against_the_base(rtn, tmp_path):
    out = tmp_path / "gptq-w4"
    args = ["quantize", BASE, "--out", out, "--num-samples", "8", "--seq-len", "64",
            "--no-verify"]
    # kill -9 during calibration: nothing keeps running, no output appears, the next run works
    killed = start(args, tmp_path / "killed.log")
    wait_for(job_log_says(tmp_path / "runs", "quantize.log", "Calibrating"), killed)
    kill_and_check_nothing_left(killed)
    assert not out.exists() and len(list(tmp_path.glob(".gptq-w4.partial-*"))) == 1
    manifest = thrifty_json(*args)
    assert not list(tmp_path.glob(".gptq-w4.partial-*"))  # the killed run's partial is gone
    calib = manifest["calibration"]
    assert calib["samples_count"] == 8 and calib["tokens"] == 8 * 64
    assert len(calib["sha256"]) == 64 and manifest["actorder"] is True
    assert manifest["verified"] is None
    result = thrifty_json("eval", BASE, rtn[0], out, "--max-tokens", "1024")
    base, quantized_rtn, quantized_gptq = result["rows"]
    assert len({r["tokens_sha256"] for r in result["rows"]}) == 1  # same tokens for every row
    for row in (quantized_rtn, quantized_gptq):
        assert base["perplexity"] < row["perplexity"] < 3 * base["perplexity"]
        assert row["weights_delta_pct"] < -60


def test_three_bit_checkpoint_vllm_cannot_load_is_kept_unverified(tmp_path):
    out = tmp_path / "rtn-w3"
    done = thrifty("quantize", BASE, "--method", "rtn", "--bits", "3", "--out", out, check=False)
    assert done.returncode == 1
    assert "vLLM could not load the quantized checkpoint" in done.stderr
    assert "Failed to find a kernel" in done.stderr  # the root cause, from the engine's log
    manifest = json.loads((out / "thrifty-quantize.json").read_text())
    assert manifest["verified"] is False and manifest["bits"] == 3


def test_group_size_that_does_not_divide_fails_before_calibration(tmp_path):
    out = tmp_path / "g128"
    done = thrifty("quantize", BASE, "--group-size", "128", "--out", out, check=False)
    assert done.returncode == 1
    assert "does not divide the input width of 180 layers" in done.stderr
    assert "model.layers.0.self_attn.q_proj (576)" in done.stderr
    assert not out.exists()


TINY_GPT2 = """
import shutil, sys
from transformers import GPT2Config, GPT2LMHeadModel
GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=128)).save_pretrained(
    sys.argv[1])
shutil.copy(sys.argv[2], sys.argv[1])  # a tokenizer, which every model folder needs
"""


def test_awq_on_an_architecture_without_mappings_says_which_are_supported(tmp_path):
    folder = tmp_path / "tiny-gpt2"
    subprocess.run([engines.python_for("compress"), "-c", TINY_GPT2, str(folder),
                    str(models.prepared_dir(BASE) / "tokenizer.json")], check=True,
                   capture_output=True)
    done = thrifty("quantize", folder, "--method", "awq", "--out", tmp_path / "out",
                   check=False)
    assert done.returncode == 1
    assert "no such mappings for it" in done.stderr and "GPT2LMHeadModel" in done.stderr
    assert "LlamaForCausalLM" in done.stderr  # the supported list
    assert not (tmp_path / "out").exists()


def test_awq_then_gptq_with_the_importance_observer(tmp_path):
    out = tmp_path / "awq-gptq"
    manifest = thrifty_json("quantize", BASE, "--method", "awq-gptq", "--num-samples", "4",
                            "--seq-len", "64", "--no-verify", "--out", out)
    assert manifest["method"] == "awq-gptq" and manifest["observer"] == "imatrix-mse"
    recipe = manifest["recipe"]
    assert recipe.index("AWQModifier") < recipe.index("GPTQModifier")
    assert "imatrix-mse" in recipe and manifest["actorder"] is True
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = config["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 4 and weights["symmetric"] is False


def renamed_base(folder, architecture: str):
    """The default model's files linked into `folder`, its config naming `architecture`."""
    folder.mkdir()
    for source in models.prepared_dir(BASE).iterdir():
        if source.name != "config.json":
            (folder / source.name).symlink_to(source)
    config = json.loads((models.prepared_dir(BASE) / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    return folder


def test_an_architecture_vllm_does_not_serve_is_refused_before_quantizing(tmp_path):
    """Even with --no-verify: the checkpoint would be written, and vLLM could not load it."""
    folder = renamed_base(tmp_path / "renamed", "LlamaForCausalLMM")
    out = tmp_path / "out"
    done = thrifty("quantize", folder, "--method", "rtn", "--no-verify", "--out", out,
                   check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "'LlamaForCausalLMM', which vLLM" in done.stderr
    assert "Close names it has: LlamaForCausalLM" in done.stderr
    assert not out.exists()


def test_a_class_vllm_serves_through_its_transformers_backend_is_accepted(tmp_path):
    """vLLM 0.32.0 has no MinistralForCausalLM of its own; transformers has, and vLLM serves it
    with its Transformers backend (the weights are the default Llama model's: model_type
    llama builds them). The check lets it through and says so; vLLM really serves it."""
    folder = renamed_base(tmp_path / "ministral", "MinistralForCausalLM")
    done = thrifty("bench", "latency", "--model", folder, "--batch-size", "1",
                   "--input-tokens", "16", "--output-tokens", "4", "--iterations", "1",
                   "--json", check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Transformers backend" in done.stderr
    case = json.loads(done.stdout)["cases"][0]
    assert case["latency_ms_p50"] > 0 and case["decode_step_ms_mean"] > 0
