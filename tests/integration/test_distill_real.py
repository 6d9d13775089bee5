"""`thrifty distill` on the real SmolLM2-135M, the real enwiki text, real vLLM and real training.

Small settings (a few layers, short sequences, a few steps) keep each run to tens of seconds;
the quality comparison lives in benchmarks/distill_quality.py.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from cli_helpers import thrifty, thrifty_json
from interrupt_helpers import kill_and_check_nothing_left, running, start, wait_for

from thrifty.assets.models import DEFAULT_MODEL, prepared_dir
from thrifty.core import engines, jobs

SMALL = ["--seq-len", "64", "--batch-size", "2", "--no-eval"]


def engine_json(code: str, *args: str) -> dict:
    """Run Python in the compress engine (torch, transformers, numpy) and read its JSON."""
    done = subprocess.run([engines.python_for("compress"), "-c", code, *args], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": jobs.engine_pythonpath()})
    return json.loads(done.stdout.strip().splitlines()[-1])


SIGNAL_AGAINST_TRANSFORMERS = """
import json, sys
import numpy as np, torch
from thrifty.formats import teacher_signal
from thrifty.libs import hf
reader = teacher_signal.SignalReader(sys.argv[1])
model = hf.load_causal_lm(sys.argv[2])
agree, diffs, mass = 0, [], []
for index in range(len(reader)):
    tokens, ids, logprobs = reader.get(index)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor(np.array(tokens, dtype=np.int64))[None])
                                 .logits[0, :-1].float(), -1)
    top = logp.topk(ids.shape[1], dim=-1)
    agree += int((top.indices[:, 0].numpy() == ids[:, 0]).sum())
    stored = torch.tensor(np.array(logprobs, dtype=np.float32))
    diffs.append(float((logp.gather(1, torch.tensor(ids.astype(np.int64))) - stored).abs().mean()))
    mass.append(float(stored.exp().sum(-1).mean()))
positions = len(reader) * (reader.manifest["seq_len"] - 1)
print(json.dumps({"top1_agreement": agree / positions, "mean_abs_logprob_diff": max(diffs),
                  "top_k_mass": sum(mass) / len(mass), "shape": list(ids.shape)}))
"""

LOSSES = """
import json, torch
from thrifty.distill.losses import divergence, topk_bins, full_bins, distillation_loss
torch.manual_seed(0)
s, t = torch.randn(3, 5, 50), torch.randn(3, 5, 50) * 2
tp, sp = full_bins(s, t, 1.0)
out = {}
for loss in ("fkl", "rkl", "jsd"):
    out[loss + "_self"] = float(divergence(tp, tp, loss).abs().max())
    out[loss] = float(divergence(tp, sp, loss).mean())
out["fkl_torch"] = float(torch.nn.functional.kl_div(sp, tp, log_target=True, reduction="none")
                         .sum(-1).mean())
out["rkl_torch"] = float(torch.nn.functional.kl_div(tp, sp, log_target=True, reduction="none")
                         .sum(-1).mean())
out["jsd_swapped"] = float(divergence(sp, tp, "jsd").mean())
# top-k bins with every token in the top k equal the full distributions
t_logp = torch.log_softmax(t, -1)
ids = t_logp.argsort(-1, descending=True)
all_t, all_s = topk_bins(s, ids, t_logp.gather(-1, ids), 1.0)
out["all_k_fkl"] = float(divergence(all_t[..., :-1], all_s[..., :-1], "fkl").mean())
few_t, few_s = topk_bins(s, ids[..., :5], t_logp.gather(-1, ids[..., :5]), 1.0)
out["top5_fkl"] = float(divergence(few_t, few_s, "fkl").mean())
out["bins_sum"] = float(few_s.exp().sum(-1).sub(1).abs().max())
# distilling into itself: zero divergence, gradient only from cross-entropy at alpha < 1
ids_in = torch.randint(0, 50, (3, 6))
logits = torch.randn(3, 6, 50, requires_grad=True)
same = distillation_loss(logits, ids_in, loss="fkl", alpha=1.0, temperature=2.0,
                         teacher_logits=logits.detach())
same["loss"].backward()
out["self_kd_grad"] = float(logits.grad.abs().max())
ce_only = distillation_loss(logits, ids_in, loss="fkl", alpha=0.0, temperature=1.0)
out["ce_matches"] = float(abs(ce_only["loss"] - torch.nn.functional.cross_entropy(
    logits[:, :-1].reshape(-1, 50), ids_in[:, 1:].reshape(-1))))
print(json.dumps(out))
"""


def test_losses_against_torch_and_their_defining_properties():
    out = engine_json(LOSSES)
    for loss in ("fkl", "rkl", "jsd"):
        assert out[f"{loss}_self"] < 1e-6
        assert out[loss] > 0.01
    assert out["fkl"] == pytest.approx(out["fkl_torch"], rel=1e-5)
    assert out["rkl"] == pytest.approx(out["rkl_torch"], rel=1e-5)
    assert out["jsd"] == pytest.approx(out["jsd_swapped"], rel=1e-5)  # symmetric at beta 0.5
    assert out["jsd"] < 0.6932  # bounded by ln 2 at beta 0.5
    assert out["all_k_fkl"] == pytest.approx(out["fkl"], rel=1e-4)
    assert out["top5_fkl"] < out["fkl"]  # coarse-graining never increases a KL divergence
    assert out["bins_sum"] < 1e-5
    assert out["self_kd_grad"] < 1e-6
    assert out["ce_matches"] < 1e-6


def test_offline_distillation_end_to_end(tmp_path):
    """Derived student, vLLM top-k capture, training, and teacher / before / after perplexity."""
    out = tmp_path / "d"
    result = thrifty_json("distill", "--teacher", DEFAULT_MODEL, "--student-from-teacher",
                          "--keep-layers", "6", "--out", out, "--steps", "6", "--seq-len", "64",
                          "--batch-size", "2", "--shard-size", "4", "--save-steps", "3",
                          "--learning-rate", "5e-4", "--eval-tokens", "1024")
    measured = result["measured"]
    assert measured["train_sequences_count"] == 12 and measured["steps_count"] == 6
    # 20 ids (uint16) + 20 log-probabilities (float16) per position, plus .npy headers
    assert 80 <= measured["signal_bytes_per_token"] < 90
    assert measured["student_after_perplexity"] < measured["student_before_perplexity"]
    assert measured["teacher_perplexity"] < measured["student_after_perplexity"]
    # training moved the student's next-token distribution towards the teacher's
    assert 0 < measured["student_after_kld_nats"] < measured["student_before_kld_nats"]
    assert (measured["student_before_top1_agreement_pct"]
            < measured["student_after_top1_agreement_pct"] < 100)
    config = json.loads((out / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    kept = result["details"]["prepare"]["kept_layers"]
    assert len(kept) == 6 and kept == sorted(kept)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3",
                                                                       "checkpoint-6"]
    assert "| student after |" in (out / "report.md").read_text()
    # vLLM's captured signal agrees with transformers' own forward pass, position by position
    check = engine_json(SIGNAL_AGAINST_TRANSFORMERS, str(out / "signal"),
                        str(prepared_dir(DEFAULT_MODEL)))
    assert check["shape"] == [63, 20]
    assert check["top1_agreement"] > 0.95
    assert check["mean_abs_logprob_diff"] < 0.15
    assert 0.5 < check["top_k_mass"] < 1.0


@pytest.mark.parametrize("processes", [1, 2], ids=["one-worker", "torchrun-ranks"])
def test_training_killed_with_sigkill_leaves_nothing_running_and_resumes(tmp_path, processes):
    """One worker leads its process group; under torchrun every rank watches its own parent
    (the launcher), which the kill leaves to the parent-death signal."""
    out = tmp_path / "d"
    args = ["distill", "--teacher", DEFAULT_MODEL, "--student-from-teacher", "--keep-layers",
            "2", "--teacher-signal", "online", "--steps", "16", "--save-steps", "4",
            "--processes", str(processes), "--out", out, *SMALL]
    proc = start(args, tmp_path / "first.log")
    wait_for(lambda: any((out / "checkpoints").glob("checkpoint-*/trainer_state.json")), proc)
    if processes > 1:
        assert running(proc, "torch.distributed.run")  # the launcher and its ranks are up
    kill_and_check_nothing_left(proc)  # the training worker(s) and the launcher end with it
    assert not (out / "student").exists()
    complete = sorted(int(p.parent.name.split("-")[1])
                      for p in (out / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    assert complete and complete[-1] < 16

    refused = thrifty(*args, check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    result = thrifty_json(*args, "--resume")
    train = result["details"]["train"]
    assert train["resumed_from"].endswith(f"checkpoint-{complete[-1]}")
    assert train["steps_count"] == 16
    assert train["steps_run_count"] == 16 - complete[-1]
    assert (out / "student" / "config.json").is_file()


def test_capture_killed_with_sigkill_leaves_nothing_running_and_resumes(tmp_path):
    out = tmp_path / "d"
    args = ["distill", "--teacher", DEFAULT_MODEL, "--student", DEFAULT_MODEL, "--steps", "8",
            "--shard-size", "1", "--capture-only", "--out", out, *SMALL]
    manifest = out / "signal" / "manifest.json"

    def some_shards() -> bool:
        return manifest.is_file() and len(json.loads(manifest.read_text())["shards"]) >= 2

    proc = start(args, tmp_path / "first.log")
    wait_for(some_shards, proc)
    kill_and_check_nothing_left(proc)  # vLLM's engine processes too
    done_before = len(json.loads(manifest.read_text())["shards"])
    assert done_before < 16
    result = thrifty_json(*args, "--resume")
    captured = result["details"]["capture"]["shards_captured_count"]
    assert captured == 16 - done_before
    assert len(json.loads(manifest.read_text())["shards"]) == 16
    assert not list((out / "signal").glob(".*tmp*"))


def can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k none /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs unprivileged user namespaces (unshare)")
def test_full_disk_during_capture_leaves_a_resumable_state(tmp_path):
    """A real full disk: a 48 KiB tmpfs in a private mount namespace, grown before --resume."""
    disk = tmp_path / "disk"
    disk.mkdir()
    args = " ".join(["distill", "--teacher", DEFAULT_MODEL, "--student", DEFAULT_MODEL,
                     "--steps", "6", "--shard-size", "1", "--capture-only", "--out",
                     str(disk / "d"), *SMALL])
    python = f"{sys.executable} -m thrifty"
    script = f"""
set -u
mount -t tmpfs -o size=48k none {disk}
{python} {args} > {tmp_path}/first.out 2>&1; echo "first=$?"
ls -a {disk}/d/signal > {tmp_path}/after-full.txt
cp {disk}/d/signal/manifest.json {tmp_path}/manifest-full.json
mount -o remount,size=4m {disk}
{python} {args} --resume --json > {tmp_path}/second.json 2> {tmp_path}/second.err; echo "second=$?"
cp {disk}/d/signal/manifest.json {tmp_path}/manifest-done.json
"""
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)
    message = (tmp_path / "first.out").read_text()
    assert "first=0" not in done.stdout and "first=" in done.stdout, (done.stdout, message[-3000:])
    assert "disk holding" in message and "is full" in message and "--resume" in message
    assert "Traceback" not in message
    full = json.loads((tmp_path / "manifest-full.json").read_text())
    kept = len(full["shards"])
    assert 1 <= kept < 12
    listed = (tmp_path / "after-full.txt").read_text().split()
    shard_files = [name for name in listed if name.startswith("shard-")]
    assert len(shard_files) == 2 * kept  # nothing the manifest does not list
    assert not [name for name in listed if "tmp" in name]
    assert "second=0" in done.stdout, (tmp_path / "second.err").read_text()[-3000:]
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["details"]["capture"]["shards_captured_count"] == 12 - kept
    assert len(json.loads((tmp_path / "manifest-done.json").read_text())["shards"]) == 12


def test_two_training_processes_on_cpu_with_ddp_over_gloo_and_a_lora_student(tmp_path):
    out = tmp_path / "d"
    result = thrifty_json("distill", "--teacher", DEFAULT_MODEL, "--student-from-teacher",
                          "--keep-layers", "2", "--teacher-signal", "online", "--steps", "3",
                          "--processes", "2", "--lora", "--lora-rank", "4", "--out", out, *SMALL)
    train = result["details"]["train"]
    assert train["world_size"] == 2
    assert train["tokens_per_step"] == 2 * 2 * 64  # batch 2 on each of 2 processes
    assert result["measured"]["train_sequences_count"] == 3 * 2 * 2
    assert all(h["kd"] > 0 for h in train["history"])
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "student" / "config.json").read_text())["num_hidden_layers"] == 2
    # LoRA trains a small share of the weights
    assert train["trainable_params"] < 0.1 * result["details"]["prepare"][
        "student_parameters_params"]


def test_different_tokenizers_are_refused(tmp_path):
    """A student whose tokenizer maps two tokens to each other's ids, and one whose vocabulary
    has another size: each is refused with the reason, before any capture or training."""
    base = prepared_dir(DEFAULT_MODEL)
    swapped = tmp_path / "swapped"
    shutil.copytree(base, swapped, ignore=shutil.ignore_patterns("model.safetensors"))
    (swapped / "model.safetensors").symlink_to(base / "model.safetensors")
    tokenizer = json.loads((swapped / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["the"], vocab["and"] = vocab["and"], vocab["the"]
    (swapped / "tokenizer.json").write_text(json.dumps(tokenizer))
    done = thrifty("distill", "--teacher", DEFAULT_MODEL, "--student", swapped, "--out",
                   tmp_path / "d1", *SMALL, check=False)
    assert done.returncode != 0
    assert "same tokenizer" in done.stderr and "mapped differently" in done.stderr
    assert "Traceback" not in done.stderr

    resized = tmp_path / "resized"
    shutil.copytree(swapped, resized, symlinks=True)
    shutil.copy(base / "tokenizer.json", resized / "tokenizer.json")
    config = json.loads((resized / "config.json").read_text())
    config["vocab_size"] = 32000
    (resized / "config.json").write_text(json.dumps(config))
    done = thrifty("distill", "--teacher", DEFAULT_MODEL, "--student", resized, "--out",
                   tmp_path / "d2", *SMALL, check=False)
    assert done.returncode != 0
    assert "the vocabularies differ (49152 and 32000 entries)" in done.stderr


def test_data_too_short_for_one_sequence_is_refused(tmp_path):
    data = tmp_path / "tiny.txt"
    data.write_text("Only a few words here.\n")
    done = thrifty("distill", "--teacher", DEFAULT_MODEL, "--student-from-teacher",
                   "--keep-layers", "2", "--data", data, "--out", tmp_path / "d", *SMALL,
                   check=False)
    assert done.returncode != 0
    assert "fewer than one sequence of --seq-len 64" in done.stderr
    assert "Traceback" not in done.stderr
