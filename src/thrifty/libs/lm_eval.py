"""All of thrifty's lm-evaluation-harness calls, in one place (runs inside the compress engine).

lm-eval is pinned in engines/compress.txt (0.4.13). thrifty gives it task YAML files only and
builds its TaskManager without lm-eval's own task folder: thrifty runs offline, and the
built-in lm-eval tasks download their data from the Hugging Face hub. Callers set
HF_DATASETS_OFFLINE before importing this module (datasets reads it at import).
"""

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jinja2
import lm_eval
import lm_eval.models.huggingface as lm_eval_hf
import torch
from lm_eval.api.instance import Instance
from lm_eval.evaluator import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from thrifty.core.errors import BadInput

Progress = Callable[[int, int], None]  # (requests done, requests in all)
METRIC = "acc"  # lm-eval's accuracy on multiple_choice tasks
FILTER = "none"  # lm-eval keys metrics "<metric>,<filter>"
STDERR_SAMPLES = 1000  # > 0 turns stderr on; acc's is closed-form (mean_stderr), not bootstrapped


def version() -> str:
    return lm_eval.__version__


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str, batch_size: int = 8, max_length: int | None = None,
               adapter_path: str | None = None) -> HFLM:
    """A model as lm-eval's HFLM (with a PEFT adapter over it, unmerged, where given): float32
    on CPU (bf16 kernels are slow or missing there), the checkpoint's own dtype on a GPU."""
    where = device()
    return HFLM(pretrained=path, device=where, dtype="float32" if where == "cpu" else "auto",
                batch_size=batch_size, max_length=max_length, peft=adapter_path)


def free_memory() -> None:
    """After the caller drops its last reference to a model: reclaim it now, and hand cached
    GPU blocks back, before the next model loads."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_facts(model: HFLM) -> dict:
    return {"device": str(model.device), "dtype": str(model.model.dtype).replace("torch.", ""),
            "batch_size": model.batch_size, "max_length": model.max_length,
            "prefix_token_id": model.prefix_token_id}


def load_task(task_yaml: Path):
    """The one task a YAML file defines, with its data loaded; BadInput when lm-eval cannot."""
    manager = TaskManager(include_defaults=False)
    try:
        loaded = manager.load([str(task_yaml)])
    except Exception as exc:  # lm-eval and datasets raise many kinds for a bad task file
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise BadInput(f"lm-eval could not load the task file {task_yaml}: "
                       f"{type(exc).__name__}: {first_line}") from exc
    if loaded["groups"] or len(loaded["tasks"]) != 1:
        raise BadInput(f"The task file {task_yaml} defines {len(loaded['tasks'])} tasks "
                       f"({', '.join(loaded['tasks'])}); thrifty runs one task per file.")
    (task,) = loaded["tasks"].values()
    if task.OUTPUT_TYPE != "multiple_choice":
        raise BadInput(f"The task file {task_yaml} has output_type {task.OUTPUT_TYPE!r}; "
                       "thrifty reports accuracy on multiple_choice tasks only.")
    return manager, task


def evaluate(model: HFLM, task_yaml: Path, on_progress: Progress | None = None) -> dict:
    """Accuracy of `model` on the task in `task_yaml`, with lm-eval's standard error."""
    manager, task = load_task(task_yaml)
    docs = list(task.eval_docs)
    # The accuracy a model gets by guessing: 1/choices, averaged over the questions.
    chance = sum(1 / len(task.doc_to_choice(doc)) for doc in docs) / len(docs)
    started = time.monotonic()
    try:
        with _reporting_progress(on_progress):
            results = simple_evaluate(model=model, tasks=[task], task_manager=manager,
                                      log_samples=False, bootstrap_iters=STDERR_SAMPLES)
    except jinja2.TemplateError as exc:
        raise BadInput(f"A prompt template of the task file {task_yaml} fails on its data: "
                       f"{type(exc).__name__}: {exc}") from exc
    name = task.task_name
    metrics = results["results"][name]
    if f"{METRIC},{FILTER}" not in metrics:
        raise BadInput(f"The task file {task_yaml} reports no accuracy ({METRIC}); it reports "
                       f"{sorted(k for k in metrics if ',' in k)}.")
    return {
        "task_name": name,
        "accuracy": metrics[f"{METRIC},{FILTER}"],
        "accuracy_stderr": metrics.get(f"{METRIC}_stderr,{FILTER}"),
        "questions": results["n-samples"][name]["effective"],
        "chance_accuracy": chance,
        "num_fewshot": results["configs"][name].get("num_fewshot", 0),
        "eval_s": round(time.monotonic() - started, 2),
        "lm_eval_version": version(),
        "task_config": results["configs"][name],
    }


def rolling_loglikelihood(model_path: str, text: str, max_length: int) -> dict:
    """lm-eval's total log-likelihood of `text` over rolling windows of `max_length` tokens.

    Every token of the text is predicted once; the first from lm-eval's prefix token alone
    (the tokenizer's BOS, else its EOS), so the count of predicted tokens is the text's length.
    """
    model = load_model(model_path, batch_size=1, max_length=max_length)
    request = Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)
    (total,) = model.loglikelihood_rolling([request], disable_tqdm=True)
    return {"loglikelihood": float(total), "tokens": len(model.tok_encode(text)),
            "prefix_token_id": model.prefix_token_id, "max_length": model.max_length,
            "lm_eval_version": version()}


@contextlib.contextmanager
def _reporting_progress(on_progress: Progress | None) -> Iterator[None]:
    """Report HFLM's per-request progress bar to `on_progress`.

    simple_evaluate takes no progress callback, and one MMLU run on a CPU takes many minutes;
    HFLM counts requests on a module-level `tqdm`, which is swapped for the duration only.
    """
    if on_progress is None:
        yield
        return
    original = lm_eval_hf.tqdm

    class ReportingTqdm(original):
        last = 0.0

        def update(self, n=1):
            shown = super().update(n)
            now = time.monotonic()
            if now - self.last > 0.5 or self.n >= (self.total or 0):
                self.last = now
                on_progress(self.n, self.total)
            return shown

    lm_eval_hf.tqdm = ReportingTqdm
    try:
        yield
    finally:
        lm_eval_hf.tqdm = original
