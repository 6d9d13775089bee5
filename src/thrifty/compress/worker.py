"""Engine tasks of compress: `evaluate` (perplexity and size) and `quantize` (llm-compressor).

Run as `<compress engine python> -m thrifty.compress.worker <job file>`.
"""

import time
from pathlib import Path

from thrifty.assets import corpora
from thrifty.compress.lm_eval_task import task_accuracy
from thrifty.core.files import weights_bytes
from thrifty.core.jobs import Events, worker_main


def evaluate(params: dict, events: Events) -> dict:
    """Perplexity of each model on the same evaluation text, plus weights size on disk."""
    import torch

    from thrifty.compress.perplexity import evaluation_tokens, perplexity, tokens_sha256
    from thrifty.libs import hf

    torch.manual_seed(0)
    records = corpora.read_records(Path(params["corpus_path"]))
    rows = []
    for number, model_ref in enumerate(params["models"], start=1):
        stage = f"[{number}/{len(params['models'])}] {model_ref['name']}"
        events.status(f"loading {model_ref['name']}")
        started = time.monotonic()
        tokenizer = hf.load_tokenizer(model_ref["path"])
        model = hf.load_causal_lm(model_ref["path"])
        load_s = time.monotonic() - started
        texts = corpora.record_texts(records, hf.chat_renderer(tokenizer))
        ids = evaluation_tokens(tokenizer, texts, params["max_tokens"])
        started = time.monotonic()
        scores = perplexity(model, ids, params["window"], params["stride"],
                            lambda done, total, s=stage: events.progress(s, done, total, "windows"))
        eval_s = time.monotonic() - started
        parameters = sum(p.numel() for p in model.parameters())
        weights = weights_bytes(Path(model_ref["path"]))  # None for a hub id
        rows.append({
            "model": model_ref["name"],
            "path": model_ref["path"],
            "perplexity": scores["perplexity"],
            "eval_tokens": len(ids),
            "scored_tokens": scores["scored_tokens"],
            "windows_count": scores["windows_count"],
            "tokens_sha256": tokens_sha256(ids),
            "parameters_params": parameters,
            "weights_bytes": weights,
            "bytes_per_param": (weights / parameters) if weights else None,
            "load_s": round(load_s, 2),
            "eval_s": round(eval_s, 2),
            "eval_tokens_per_s": round(len(ids) / eval_s, 1),
        })
        del model
    return {"rows": rows, "torch_threads": torch.get_num_threads()}


def quantize(params: dict, events: Events) -> dict:
    from thrifty.compress.quantize import quantize as run_quantize

    return run_quantize(params, events)


TASKS = {"evaluate": evaluate, "quantize": quantize, "task_accuracy": task_accuracy}

if __name__ == "__main__":
    worker_main(TASKS)
