"""Run records and atomic outputs."""

import json

import pytest

from thrifty.core.errors import BadInput
from thrifty.core.files import atomic_folder
from thrifty.core.runs import SCHEMA_VERSION, RunRecord, check_metric_names


def test_run_record_ok(isolated_home):
    with RunRecord("eval", {"model": "m"}) as run:
        run.record({"perplexity": 21.5, "eval_tokens": 10, "eval_s": 1.5})
    result = json.loads((run.path / "result.json").read_text())
    assert result["schema_version"] == SCHEMA_VERSION
    assert result["status"] == "ok"
    assert result["measured"]["perplexity"] == 21.5
    assert json.loads((run.path / "config.json").read_text())["model"] == "m"
    env = json.loads((run.path / "environment.json").read_text())
    assert env["hardware"]["cpu_cores"] >= 1 and "thrifty_version" in env
    assert (run.path / "logs").is_dir()


def test_run_record_failure_is_recorded(isolated_home):
    with pytest.raises(BadInput), RunRecord("eval", {}) as run:
        raise BadInput("bad corpus")
    result = json.loads((run.path / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == "bad corpus"


def test_metric_names_need_units():
    check_metric_names({"ttft_ms_p50": 1, "output_tokens_per_s": 2, "weights_gib": 3})
    with pytest.raises(ValueError, match="latency"):
        check_metric_names({"latency": 1})


def test_atomic_folder_keeps_old_output_on_failure(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(final, force=True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (final / "old.txt").read_text() == "old"


def test_atomic_folder_refuses_to_overwrite_without_force(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    with pytest.raises(BadInput, match="--force"), atomic_folder(final):
        pass
    with atomic_folder(final, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_secrets_are_not_recorded(monkeypatch):
    from thrifty.core import runs

    monkeypatch.setenv("THRIFTY_API_KEY", "s3cret")
    monkeypatch.setattr("sys.argv", ["thrifty", "serve", "m", "--api-key", "s3cret",
                                     "--api-key=s3cret", "--port", "1"])
    recorded = str(runs.fingerprint())
    assert "s3cret" not in recorded and "--port" in recorded


def test_secret_option_values_are_masked_and_token_counts_kept():
    from thrifty.core.runs import redact_argv

    argv = ["thrifty", "bench", "--api-key", "sk-1", "--hf-token=hf_2", "--max-tokens", "512",
            "--eval-tokens=4096", "--password", "pw"]
    assert redact_argv(argv) == ["thrifty", "bench", "--api-key", "***", "--hf-token=***",
                                 "--max-tokens", "512", "--eval-tokens=4096", "--password",
                                 "***"]
