"""`thrifty quantize BASE --adapter DIR` and `thrifty eval BASE+DIR`: every adapter that cannot
be merged into or applied over BASE is refused before any engine starts, and nothing is
written."""

import pytest
from safetensors_files import LLAMA, make_adapter, make_base


@pytest.fixture
def base(tmp_path):
    return make_base(tmp_path / "base")


def refused(run_cli, base, adapter, out):
    result = run_cli("quantize", base, "--adapter", adapter, "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not out.exists()
    return " ".join(result.output.split())


def test_adapter_trained_for_another_base_is_refused(isolated_home, run_cli, base, tmp_path):
    wider = {**LLAMA, "hidden": 128}
    adapter = make_adapter(tmp_path / "a", spec=wider, trained_on="other/model")
    text = refused(run_cli, base, adapter, tmp_path / "out")
    assert "does not fit the base model" in text and "'other/model'" in text


@pytest.mark.parametrize("fields, message", [
    ({"use_dora": True}, "is a DoRA adapter"),
    ({"bias": "lora_only"}, "trains biases"),
    ({"modules_to_save": ["lm_head"]}, "fully trained modules (lm_head)"),
    ({"peft_type": "IA3"}, "is of type IA3"),
])
def test_adapters_that_are_not_plain_lora_are_refused(isolated_home, run_cli, base, tmp_path,
                                                      fields, message):
    adapter = make_adapter(tmp_path / "a", **fields)
    assert message in refused(run_cli, base, adapter, tmp_path / "out")


def test_a_quantized_base_is_refused_with_the_command_to_run(isolated_home, run_cli, tmp_path):
    quantized = make_base(tmp_path / "q", packed_bits=4)
    adapter = make_adapter(tmp_path / "a")
    text = refused(run_cli, quantized, adapter, tmp_path / "out")
    assert "already quantized" in text
    assert f"thrifty quantize BASE --adapter {adapter} --out OUT" in text


def test_adapter_path_that_is_a_file_is_refused(isolated_home, run_cli, base, tmp_path):
    path = tmp_path / "adapter.safetensors"
    path.write_text("x")
    assert "is a file" in refused(run_cli, base, path, tmp_path / "out")


def test_adapter_with_pickle_weights_only_is_refused(isolated_home, run_cli, base, tmp_path):
    adapter = make_adapter(tmp_path / "a", weights=False)
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04")
    assert "only pickle weights" in refused(run_cli, base, adapter, tmp_path / "out")


def test_eval_of_a_model_plus_a_missing_adapter_is_refused(isolated_home, run_cli, base,
                                                           tmp_path):
    result = run_cli("eval", f"{base}+{tmp_path / 'nowhere'}")
    assert result.exit_code == 1 and "does not exist" in result.output
    assert "Traceback" not in result.output


def test_eval_of_an_adapter_over_another_base_is_refused(isolated_home, run_cli, base, tmp_path):
    adapter = make_adapter(tmp_path / "a", spec={**LLAMA, "hidden": 128})
    result = run_cli("eval", str(base), f"{base}+{adapter}")
    assert result.exit_code == 1 and "does not fit the base model" in result.output


def test_a_path_with_a_plus_in_its_name_is_a_model_not_an_adapter(tmp_path):
    from thrifty.compress.commands import _split_adapter

    odd = make_base(tmp_path / "c++model")
    assert _split_adapter(str(odd)) == (str(odd), None)
    assert _split_adapter("smollm2-135m+/a/b") == ("smollm2-135m", "/a/b")
