"""Compress-engine task `evaluate`: perplexity and weights size of each model on the same
evaluation tokens, and each later model's distance from the first (KL divergence, top-1
agreement, change in log-perplexity, with intervals; compress/quality.py).

Models are loaded one at a time; when candidates follow, the first (the base) keeps its
log-probabilities on disk for the comparisons (quality.BaseLogProbs), so it runs once however
many candidates follow. The file goes when the task ends, on an error or SIGTERM too.
"""

import math
import signal
import sys
import tempfile
import time
from pathlib import Path

from thrifty.assets import corpora
from thrifty.core.files import weights_bytes
from thrifty.core.jobs import Events


def evaluate(params: dict, events: Events) -> dict:
    import torch

    from thrifty.compress import quality

    torch.manual_seed(0)
    records = corpora.read_records(Path(params["corpus_path"]))
    models = params["models"]
    rows, base = [], None
    kept = (quality.BaseLogProbs(Path(params.get("work_dir") or tempfile.gettempdir()))
            if len(models) > 1 else None)
    # `thrifty` stops a job with SIGTERM: exit through `finally`, which removes the file.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for number, model_ref in enumerate(models, start=1):
            stage = f"[{number}/{len(models)}] {model_ref['name']}"
            row, scores = _evaluate_model(model_ref, records, params, events, stage, base,
                                          kept if base is None else None)
            if base is None:
                base = {"ref": model_ref, "row": row, "scores": scores, "log_probs": kept}
            rows.append(row)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if kept is not None:
            kept.remove()
    return {"rows": rows, "torch_threads": torch.get_num_threads()}


def _evaluate_model(model_ref: dict, records: list[dict], params: dict, events: Events,
                    stage: str, base: dict | None, keep: object | None) -> tuple[dict, object]:
    from thrifty.compress import quality
    from thrifty.compress.perplexity import evaluation_tokens, tokens_sha256, window_log_probs
    from thrifty.compress.windows import plan_windows
    from thrifty.libs import hf

    events.status(f"loading {model_ref['name']}")
    started = time.monotonic()
    tokenizer = hf.load_tokenizer(model_ref["path"])
    model = hf.load_causal_lm(model_ref["path"], dense=bool(model_ref.get("adapter_path")))
    if model_ref.get("adapter_path"):  # unmerged, over this base, as a server applies it
        from thrifty.libs import lora

        model = lora.with_adapter(model, model_ref["adapter_path"])
    load_s = time.monotonic() - started
    prefix = hf.prefix_ids(tokenizer)
    ids = evaluation_tokens(tokenizer, corpora.record_texts(records, hf.chat_renderer(tokenizer)),
                            params["max_tokens"], prefix)
    sha = tokens_sha256(prefix, ids)
    refused = _not_comparable(base, model_ref, sha) if base else None
    compare_with = base["log_probs"] if base and not refused else None
    windows = plan_windows(len(ids), len(prefix), params["window"], params["stride"])
    scores = quality.TokenScores()
    if keep is not None:
        keep.expect(sum(w.targets_end - w.targets_start for w in windows))
    started = time.monotonic()
    for index, (_, log_probs, targets) in enumerate(window_log_probs(model, prefix, ids,
                                                                     windows)):
        quality.add_window(scores, log_probs, targets, keep=keep, base=compare_with)
        events.progress(stage, index + 1, len(windows), "windows")
    eval_s = time.monotonic() - started
    nll = scores.array("nll")
    parameters = sum(p.numel() for p in model.parameters())
    weights = weights_bytes(Path(model_ref["path"]))  # None for a hub id
    row = {
        "model": model_ref["name"], "path": model_ref["path"],
        "adapter": model_ref.get("adapter_path"),
        "perplexity": math.exp(float(nll.mean())),
        "perplexity_ci95": quality.perplexity_interval(nll),
        "eval_tokens": len(ids), "prefix_ids": prefix, "scored_tokens": len(nll),
        "windows_count": len(windows), "tokens_sha256": sha,
        "parameters_params": parameters, "weights_bytes": weights,
        "bytes_per_param": (weights / parameters) if weights else None,
        "load_s": round(load_s, 2), "eval_s": round(eval_s, 2),
        "eval_tokens_per_s": round(len(ids) / eval_s, 1),
    }
    if base:
        row["vs_base"] = quality.compare(base["scores"], scores) if compare_with else None
        row["vs_base_refused"] = refused
    return row, scores


def _not_comparable(base: dict, model_ref: dict, sha: str) -> str | None:
    """Why the candidate's distributions cannot be compared token by token with the base's."""
    from thrifty.libs import hf

    mismatch = hf.tokenizer_mismatch(base["ref"]["path"], model_ref["path"])
    if mismatch:
        return mismatch
    if sha != base["row"]["tokens_sha256"]:
        return "it tokenizes the evaluation text differently (another prefix or split)"
    return None
