"""Quantization choices and bad input caught before any engine starts."""


import pytest

from thrifty.compress.quantize import calibration_samples, choose_group_size, samples_sha256
from thrifty.core.errors import BadInput

# SmolLM2-135M's quantized layers: hidden 576 (q/k/v/o/gate/up inputs), intermediate 1536 (down)
SMOLLM2 = [("model.layers.0.self_attn.q_proj", 576, 576),
           ("model.layers.0.mlp.down_proj", 1536, 576)]


def test_auto_group_size_falls_back_to_64_and_says_why():
    size, note = choose_group_size(SMOLLM2, "auto")
    assert size == 64
    assert "128 does not divide" in note and "576" in note


def test_auto_group_size_keeps_128_when_it_fits():
    assert choose_group_size([("a", 4096, 4096), ("b", 11008, 4096)], "auto")[0] == 128


def test_explicit_group_size_names_the_layers_that_do_not_fit():
    with pytest.raises(BadInput) as caught:
        choose_group_size(SMOLLM2, 128)
    message = str(caught.value)
    assert "model.layers.0.self_attn.q_proj (576)" in message
    assert "would pick 64" in message


def test_no_group_size_fits():
    with pytest.raises(BadInput, match="No group size"):
        choose_group_size([("odd", 100, 10)], "auto")


class CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_calibration_samples_are_deterministic_and_spread_over_documents():
    texts = [chr(65 + d) * 100 for d in range(5)]  # five documents of 100 tokens
    first = calibration_samples(CharTokenizer(), texts, num_samples=7, seq_len=40)
    again = calibration_samples(CharTokenizer(), texts, num_samples=7, seq_len=40)
    assert first == again and samples_sha256(first) == samples_sha256(again)
    assert len(first) == 7 and all(len(s) == 40 for s in first)
    assert len({s[0] for s in first[:5]}) == 5  # one chunk from every document first


def test_calibration_samples_start_with_the_prefix_and_the_seed_changes_the_draw():
    texts = [chr(65 + d) * 100 for d in range(5)]
    samples = calibration_samples(CharTokenizer(), texts, num_samples=3, seq_len=40, prefix=[1])
    assert all(s[0] == 1 and len(s) == 40 and s[1] != 1 for s in samples)
    draws = {tuple(s[0] for s in calibration_samples(CharTokenizer(), texts, num_samples=3,
                                                     seq_len=40, seed=seed))
             for seed in range(4)}
    assert len(draws) > 1  # other seeds, other documents first


def test_calibration_needs_some_text():
    with pytest.raises(BadInput, match="no usable text"):
        calibration_samples(CharTokenizer(), ["short"], num_samples=4, seq_len=64)


def test_existing_output_needs_force(isolated_home, run_cli, model_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("quantize", model_folder, "--out", out)
    assert result.exit_code == 1
    assert "already exists" in result.output and "--force" in result.output


def test_output_inside_the_model_folder_is_refused(isolated_home, run_cli, model_folder):
    result = run_cli("quantize", model_folder, "--out", model_folder / "q")
    assert result.exit_code == 1
    assert "inside the model folder" in result.output


@pytest.mark.parametrize("args, message", [
    (["--group-size", "big"], "must be 'auto' or a positive integer"),
    (["--method", "squeeze"], "'squeeze' is not one of"),
    (["--bits", "1"], "1 is not in the range 2<=x<=8"),
    (["--dampening", "0"], "--dampening"),
])
def test_bad_options(isolated_home, run_cli, model_folder, tmp_path, args, message):
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_missing_calibration_file(isolated_home, run_cli, model_folder, tmp_path):
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out",
                     "--calib", tmp_path / "nope.jsonl")
    assert result.exit_code == 1
    assert "neither 'enwiki' nor an existing file" in result.output


def test_memory_estimate_beyond_free_ram_is_refused(tmp_path):
    from thrifty.compress.quantize import _check_resources

    with pytest.raises(BadInput, match="GiB of RAM"):
        _check_resources({"memory_bytes": 10**15, "output_bytes": 1}, str(tmp_path))


def test_output_larger_than_free_disk_is_refused(tmp_path):
    from thrifty.compress.quantize import _check_resources

    with pytest.raises(BadInput, match="free"):
        _check_resources({"memory_bytes": 1, "output_bytes": 10**16}, str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (["--method", "rtn", "--observer", "imatrix-mse"], "--method rtn reads none"),
    (["--method", "awq-gptq", "--scheme", "W8A8"], "AWQ protects salient weights"),
])
def test_recipes_that_cannot_work_are_refused_before_any_engine(isolated_home, run_cli,
                                                                 model_folder, tmp_path, args,
                                                                 message):
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out", *args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in " ".join(result.output.split()) and not (tmp_path / "out").exists()
