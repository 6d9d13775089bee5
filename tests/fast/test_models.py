"""Model references: built-in names, local folders (validated), hub ids (offline here)."""

import json

import pytest
from safetensors_files import make_model_folder, write_safetensors

from thrifty.assets import models
from thrifty.core.errors import BadInput, HubUnreachable


def make_folder(tmp_path, *files, config=True):
    folder = make_model_folder(tmp_path / "model", weights=False)
    if not config:
        (folder / "config.json").unlink()
    for name in files:
        if name.endswith(".safetensors"):
            write_safetensors(folder / name, {})
        else:
            (folder / name).write_bytes(b"\0" * 8)
    return folder


def test_builtin_model_resolves_into_the_cache(isolated_home):
    ref = models.resolve("smollm2-135m")
    assert ref.kind == "builtin"
    assert ref.path.startswith(str(isolated_home))
    assert not models.is_prepared("smollm2-135m")


def test_valid_local_folder(tmp_path):
    folder = make_folder(tmp_path, "model.safetensors")
    ref = models.resolve(str(folder))
    assert ref.kind == "local" and ref.path == str(folder.resolve())


def test_missing_path(tmp_path, run_cli, isolated_home):
    result = run_cli("models", "prepare", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert "not an existing folder" in result.output


def test_folder_without_config(tmp_path):
    folder = make_folder(tmp_path, "model.safetensors", config=False)
    with pytest.raises(BadInput, match="no config.json"):
        models.resolve(str(folder))


def test_folder_without_weights(tmp_path, run_cli, isolated_home):
    folder = make_folder(tmp_path)
    result = run_cli("models", "prepare", str(folder))
    assert result.exit_code == 1
    assert "no weights" in result.output


def test_pickle_weights_refused_unless_allowed(tmp_path):
    folder = make_folder(tmp_path, "pytorch_model.bin")
    with pytest.raises(BadInput, match="pickle"):
        models.resolve(str(folder))
    assert models.resolve(str(folder), allow_pickle=True).kind == "local"


def test_damaged_config(tmp_path):
    folder = make_folder(tmp_path, "model.safetensors")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        models.resolve(str(folder))


def test_a_file_is_not_a_model_folder(tmp_path):
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"")
    with pytest.raises(BadInput, match="is a file"):
        models.resolve(str(file))


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable, match="no model hub is reachable"):
        models.resolve("HuggingFaceTB/SmolLM2-135M")


def test_hub_id_unreachable_endpoint(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    with pytest.raises(HubUnreachable, match="cannot be reached"):
        models.resolve("org/model")


def test_models_prepare_validates_local_folder(tmp_path, run_cli, isolated_home):
    folder = make_folder(tmp_path, "model.safetensors")
    result = run_cli("models", "prepare", str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == "local"


def test_models_list(run_cli, isolated_home):
    result = run_cli("models", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert rows[0]["name"] == "smollm2-135m" and rows[0]["state"] == "not prepared"


@pytest.mark.parametrize("tokenizer", ["spiece.model", "qwen.tiktoken", "tekken.json"])
def test_tokenizers_other_than_tokenizer_json_are_accepted(tmp_path, tokenizer):
    folder = make_folder(tmp_path, "model.safetensors")
    (folder / "tokenizer.json").unlink()
    (folder / tokenizer).write_bytes(b"x")
    assert models.resolve(str(folder)).kind == "local"
