"""Model shapes from configs and the memory fit, checked against hand calculations and the
published figures (a 70B model: ~140 GB of FP16 weights, ~35 GB at 4 bits)."""

import json
from pathlib import Path

import pytest

from thrifty.core.errors import BadInput
from thrifty.cost import catalog, model_shape
from thrifty.cost.fit import fit

SMOLLM2_135M = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                "tie_word_embeddings": True, "max_position_embeddings": 8192}


def test_parameter_count_by_hand():
    shape = model_shape.from_config(SMOLLM2_135M, "smollm2")
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536  # q,o + k,v + gate,up,down
    assert shape.linear_params == 30 * per_layer
    assert shape.params == 30 * per_layer + 49152 * 576 + 61 * 576  # tied head, 61 norms
    assert shape.params == 134_515_008  # SmolLM2-135M's safetensors count
    assert shape.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2


def test_70b_weights_match_the_published_figures():
    shape = model_shape.load("llama-3.1-70b")
    assert shape.params == pytest.approx(70.55e9, rel=0.005)
    assert shape.weight_bytes / 1e9 == pytest.approx(140, rel=0.02)  # ~140 GB in FP16
    w4 = model_shape.variant(shape, "w4a16")
    assert w4.linear_weight_bytes / 1e9 == pytest.approx(35, rel=0.06)  # ~35 GB at 4 bits
    assert 35 < w4.weight_bytes / 1e9 < 45  # plus 16-bit embeddings, lm_head and scales
    assert shape.weight_bytes / w4.linear_weight_bytes == pytest.approx(4, rel=0.1)
    assert shape.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # 320 KiB per token


def test_quantization_configs_are_read(tmp_path):
    compressed = {**SMOLLM2_135M, "quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"num_bits": 4, "group_size": 128, "strategy": "group"},
            "input_activations": None}}}}
    shape = model_shape.from_config(compressed, "q")
    assert (shape.weight_bits, shape.group_size, shape.precision) == (4, 128, "w4a16")
    gptq = {**SMOLLM2_135M, "quantization_config": {"quant_method": "gptq", "bits": 8,
                                                     "group_size": -1}}
    assert model_shape.from_config(gptq, "g").weight_bits == 8
    w8a8 = {**SMOLLM2_135M, "quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"num_bits": 8, "strategy": "channel"},
            "input_activations": {"num_bits": 8}}}}}
    assert model_shape.from_config(w8a8, "w").precision == "w8a8"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(compressed))
    assert model_shape.load(str(folder)).precision == "w4a16"


@pytest.mark.parametrize("config, phrase", [
    ({**SMOLLM2_135M, "num_local_experts": 8}, "no experts-per-token field"),
    ({**SMOLLM2_135M, "kv_lora_rank": 512}, "multi-head latent attention"),
    ({"hidden_size": 8}, "lacks num_hidden_layers"),
    ({**SMOLLM2_135M, "quantization_config": {"quant_method": "hqq"}}, "'hqq'"),
])
def test_configs_thrifty_cannot_size(config, phrase):
    with pytest.raises(BadInput, match=phrase):
        model_shape.from_config(config, "m")


def test_unknown_model_reference(isolated_home):
    with pytest.raises(BadInput, match="not a known model"):
        model_shape.load("no-such-model")


def test_70b_bf16_needs_two_h100s_and_more_for_long_contexts(isolated_home):
    cat = catalog.load()
    shape = model_shape.load("llama-3.1-70b")
    h100 = cat.find("h100-sxm")
    one = fit(shape, h100, context=8192)
    assert one.tensor_parallel == 2
    assert one.weights_gib_per_gpu == pytest.approx(shape.weight_bytes / 2 / 2**30)
    busy = fit(shape, h100, context=8192, concurrency=64)
    assert busy.tensor_parallel in (4, 8) and busy.max_concurrency >= 64
    w4 = fit(model_shape.variant(shape, "w4a16"), h100, context=8192)
    assert w4.tensor_parallel == 1  # ~37 GiB of weights fit one 80 GB GPU


def test_kv_cache_capacity_by_hand(isolated_home):
    cat = catalog.load()
    shape = model_shape.load("llama-3.1-8b")
    l40s = cat.find("l40s")
    got = fit(shape, l40s, context=4096)
    budget = l40s.memory_gib * 0.9 - shape.weight_bytes / 2**30 - got.runtime_gib_per_gpu
    assert got.kv_tokens_capacity == int(budget * 2**30 / shape.kv_bytes_per_token)
    assert got.max_concurrency == got.kv_tokens_capacity // 4096


def test_405b_fits_no_h100_node_but_a_h200_node(isolated_home):
    cat = catalog.load()
    shape = model_shape.load("llama-3.1-405b")
    assert not fit(shape, cat.find("h100-sxm"), context=4096).fits
    assert fit(shape, cat.find("h200"), context=4096).tensor_parallel == 8


def test_fit_command_table_and_json(isolated_home, run_cli):
    result = run_cli("fit", "llama-3.1-8b", "--context", "8192", "--gpu", "l4,h100")
    assert result.exit_code == 0, result.output
    assert "h100-sxm" in result.output and "modelled" in result.output
    data = json.loads(run_cli("fit", "llama-3.1-8b", "--variant", "bf16,w4a16",
                              "--json").output)
    assert [r["variant"] for r in data["results"]] == ["bf16", "w4a16"]
    t4 = {f["gpu"]: f for f in data["results"][0]["fits"]}["t4"]
    assert t4["tensor_parallel"] == 2  # 15 GiB of bf16 weights do not fit one 16 GB T4


def test_fit_command_model_that_fits_nowhere_says_how_much_it_needs(isolated_home, run_cli):
    result = run_cli("fit", "llama-3.1-405b", "--gpu", "l4,t4")
    assert result.exit_code == 1
    assert "fits on no GPU" in result.output and "GiB" in result.output
    assert "756.0 GiB of weights" in result.output
    assert "Traceback" not in result.output


def test_fit_command_rejects_nonsense(isolated_home, run_cli):
    result = run_cli("fit", "llama-3.1-8b", "--concurrency", "0")
    assert result.exit_code == 1 and "must be positive" in result.output


MEASURED_CONFIGS = Path(__file__).parents[2] / "benchmarks" / "data" / "h100-measurements" / \
    "configs"


@pytest.mark.parametrize("folder, total, active", [
    ("mistralai__Mixtral-8x7B-v0.1", 46.7e9, 12.9e9),  # Mistral AI: 46.7B total, 12.9B active
    ("mistralai__Mixtral-8x22B-v0.1", 141e9, 39e9),  # Mistral AI: 141B total, 39B active
    # Meta: 109B total (the vision encoder included), 17B active
    ("RedHatAI__Llama-4-Scout-17B-16E-Instruct-FP8-dynamic", 109e9, 17e9),
])
def test_mixture_of_experts_counts_match_the_published_ones(folder, total, active):
    shape = model_shape.load(str(MEASURED_CONFIGS / folder))
    assert shape.is_moe
    assert shape.params == pytest.approx(total, rel=0.015)
    assert shape.as_dict()["active_params"] == pytest.approx(active, rel=0.02)


def test_a_decode_batch_touches_more_experts_than_one_token():
    shape = model_shape.load(str(MEASURED_CONFIGS / "mistralai__Mixtral-8x7B-v0.1"))
    one, batch = shape.weight_read_bytes(1), shape.weight_read_bytes(64)
    # one token reads 2 of 8 experts per layer; 64 tokens read practically all of them
    assert one < 0.3 * shape.weight_bytes
    assert batch == pytest.approx(shape.weight_bytes, rel=0.01)


def test_an_fp8_checkpoint_keeps_its_ignored_attention_in_16_bits():
    shape = model_shape.load(str(MEASURED_CONFIGS /
                                 "RedHatAI__Llama-4-Scout-17B-16E-Instruct-FP8-dynamic"))
    assert (shape.precision, shape.weight_format, shape.attention_quantized) == \
        ("fp8", "float", False)
    all_fp8 = shape.params  # one byte each, if every linear layer were FP8
    assert all_fp8 < shape.weight_bytes < 1.1 * all_fp8
    assert 0.7 < shape.low_precision_flops_share() < 1
