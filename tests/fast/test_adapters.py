"""Adapter checks, derived vLLM flags and serve/adapters bad input, without any engine."""

import socket

import pytest
from safetensors_files import LLAMA, make_adapter, make_base

from thrifty.assets.models import ModelRef
from thrifty.core.errors import BadInput
from thrifty.formats import lora_adapter as adapters
from thrifty.serve import server


@pytest.fixture
def base(tmp_path):
    return make_base(tmp_path / "base")


def plan_for(base_dir, adapter_specs=None, adapters_dir=None, allow=(), **flags):
    ref = ModelRef("local", str(base_dir), str(base_dir))
    return server.make_plan(ref, adapter_specs or {}, adapters_dir, list(allow), "127.0.0.1",
                            8000, **flags)


@pytest.mark.parametrize("rank,expected", [(1, 1), (4, 8), (8, 8), (12, 16), (64, 64),
                                           (300, 320)])
def test_max_rank_rounds_up_to_a_rank_vllm_accepts(rank, expected):
    assert adapters.vllm_max_rank(rank) == expected


def test_rank_above_what_vllm_serves_is_refused():
    with pytest.raises(adapters.AdapterRejected, match="above the largest rank vLLM serves"):
        adapters.vllm_max_rank(1024)


def test_inspect_reads_rank_modules_and_base(tmp_path):
    info = adapters.inspect(make_adapter(tmp_path / "a", rank=4, trained_on="org/model"))
    assert (info.rank, info.modules_count, info.trained_on) == (4, 4, "org/model")
    assert info.target_modules == ["q_proj", "v_proj"]


def test_adapter_that_fits_the_base_passes(tmp_path, base):
    info = adapters.validate(make_adapter(tmp_path / "a"), base, "base")
    assert info.rank == 8


def test_adapter_fits_a_pack_quantized_copy_of_its_base(tmp_path):
    quantized = make_base(tmp_path / "q", packed_bits=4)
    assert adapters.base_linear_shapes(quantized)["model.layers.0.mlp.down_proj"] == (64, 128)
    adapters.validate(make_adapter(tmp_path / "a", modules=("mlp.down_proj",)), quantized, "q")


def test_adapter_for_another_base_width_is_refused(tmp_path, base):
    wider = make_adapter(tmp_path / "a", spec={**LLAMA, "hidden": 96}, trained_on="other/model")
    with pytest.raises(adapters.AdapterRejected) as caught:
        adapters.validate(wider, base, "base")
    message = str(caught.value)
    assert "does not fit the base model base" in message and "input width 96" in message
    assert "other/model" in message


def test_adapter_with_modules_the_base_lacks_is_refused(tmp_path, base):
    deeper = make_adapter(tmp_path / "a", spec={**LLAMA, "layers": 4})
    with pytest.raises(adapters.AdapterRejected, match="module.s. the base does not have, "
                                                       "e.g. model.layers.2"):
        adapters.validate(deeper, base, "base")


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"),
    ("file", "is a file"),
    ("no-config", "no adapter_config.json"),
    ("bad-json", "not valid JSON"),
    ("not-lora", "is of type IA3"),
    ("pickle-only", "only pickle weights"),
    ("no-weights", "no adapter_model.safetensors"),
])
def test_unusable_adapter_folders_are_refused_with_the_reason(tmp_path, base, case, match):
    path = tmp_path / "adapter"
    if case == "file":
        path.write_text("x")
    elif case == "no-config":
        path.mkdir()
    elif case == "bad-json":
        path.mkdir()
        (path / "adapter_config.json").write_text("{")
    elif case == "not-lora":
        make_adapter(path, peft_type="IA3")
    elif case == "pickle-only":
        make_adapter(path, weights=False)
        (path / "adapter_model.bin").write_bytes(b"\x80\x04")
    elif case == "no-weights":
        make_adapter(path, weights=False)
    with pytest.raises(adapters.AdapterRejected, match=match):
        adapters.validate(path, base, "base")


def test_rank_above_the_server_limit_is_refused(tmp_path, base):
    with pytest.raises(adapters.AdapterRejected, match="rank 16, above this server's limit of 8"):
        adapters.validate(make_adapter(tmp_path / "a", rank=16), base, "base", max_rank=8)


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, base):
    allowed = tmp_path / "allowed"
    inside = make_adapter(allowed / "a")
    outside = make_adapter(tmp_path / "elsewhere")
    adapters.validate(inside, base, "base", allowed_dirs=[str(allowed)])
    with pytest.raises(adapters.AdapterNotAllowed, match="outside the folders"):
        adapters.validate(outside, base, "base", allowed_dirs=[str(allowed)])
    escape = allowed / "link"
    escape.symlink_to(outside)  # a link inside the folder does not make its target allowed
    with pytest.raises(adapters.AdapterNotAllowed):
        adapters.validate(escape, base, "base", allowed_dirs=[str(allowed)])
    with pytest.raises(adapters.AdapterNotAllowed, match="without --adapters-dir"):
        adapters.validate(inside, base, "base", allowed_dirs=[])


def test_flags_are_derived_from_the_adapters(tmp_path, base):
    folder = tmp_path / "folder"
    make_adapter(folder / "small", rank=4)
    make_adapter(folder / "wider", spec={**LLAMA, "hidden": 96})  # refused, not counted
    plan = plan_for(base, {"big": str(make_adapter(tmp_path / "big", rank=12))},
                    adapters_dir=str(folder))
    assert (plan.max_lora_rank, plan.max_loras) == (16, 2)
    assert plan.max_cpu_loras == 2 + server.HOT_LOAD_HEADROOM
    assert "rounded up to 16" in plan.reasons["max_lora_rank"]
    assert list(plan.folder_adapters) == ["small"] and list(plan.folder_rejected) == ["wider"]
    args = plan.vllm_args()
    assert args[args.index("--max-lora-rank") + 1] == "16"
    assert f"big={tmp_path / 'big'}" in args


def test_no_adapters_means_no_lora(base):
    plan = plan_for(base)
    assert not plan.lora_enabled and "--enable-lora" not in plan.vllm_args()


def test_a_given_max_rank_must_be_valid_and_hold_the_adapters(tmp_path, base):
    specs = {"a": str(make_adapter(tmp_path / "a", rank=16))}
    with pytest.raises(BadInput, match="not a value vLLM accepts"):
        plan_for(base, specs, max_lora_rank=12)
    with pytest.raises(BadInput, match="below the rank of adapter 'a' .16."):
        plan_for(base, specs, max_lora_rank=8)
    assert plan_for(base, specs, max_lora_rank=32).max_lora_rank == 32


def test_a_bad_startup_adapter_stops_serve_with_every_reason(tmp_path, base):
    specs = {"good": str(make_adapter(tmp_path / "good")),
             "wide": str(make_adapter(tmp_path / "wide", spec={**LLAMA, "hidden": 96})),
             "gone": str(tmp_path / "gone")}
    with pytest.raises(adapters.AdapterRejected) as caught:
        plan_for(base, specs)
    assert "adapter 'wide'" in str(caught.value) and "adapter 'gone'" in str(caught.value)


@pytest.mark.parametrize("spec,match", [("noequals", "not NAME=PATH"), ("=path", "not NAME"),
                                        ("bad name=x", "not usable as a model name")])
def test_adapter_option_syntax(spec, match):
    with pytest.raises(BadInput, match=match):
        server.parse_adapter_specs((spec,))


def test_busy_port_is_reported():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(BadInput, match=f"Port {port} on 127.0.0.1 is already in use"):
            server.free_port("127.0.0.1", port)
    assert server.free_port("127.0.0.1", 0) > 0


def test_serve_cli_refuses_a_bad_adapter_before_starting_anything(tmp_path, base, run_cli,
                                                                  isolated_home):
    wide = make_adapter(tmp_path / "wide", spec={**LLAMA, "hidden": 96})
    result = run_cli("serve", base, "--adapter", f"wide={wide}")
    assert result.exit_code == 1
    assert "does not fit the base model base" in result.output
    assert "Traceback" not in result.output
    assert not (isolated_home / "engines").exists()  # no engine was built for a doomed run


def test_serve_cli_refuses_a_missing_adapters_dir(tmp_path, base, run_cli, isolated_home):
    result = run_cli("serve", base, "--adapters-dir", tmp_path / "nope")
    assert result.exit_code == 1 and "is not a folder" in result.output


def test_adapters_commands_explain_an_unreachable_server(run_cli):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("adapters", "unload", "x", "--server", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1 and "No server answers at" in result.output
    assert "Traceback" not in result.output


def test_adapters_inspect_cli(tmp_path, base, run_cli, isolated_home):
    adapter = make_adapter(tmp_path / "a", rank=4)
    result = run_cli("adapters", "inspect", adapter, "--base", base, "--json")
    assert result.exit_code == 0, result.output
    assert '"vllm_max_lora_rank": 8' in result.output
    wide = make_adapter(tmp_path / "w", spec={**LLAMA, "hidden": 96})
    result = run_cli("adapters", "inspect", wide, "--base", base)
    assert result.exit_code == 1 and "does not fit" in result.output


def test_serving_beyond_localhost_without_a_key_warns(tmp_path, run_cli, isolated_home):
    result = run_cli("serve", tmp_path / "missing-model", "--host", "0.0.0.0")
    assert "without --api-key" in result.output and result.exit_code == 1
    result = run_cli("serve", tmp_path / "missing-model")
    assert "without --api-key" not in result.output
