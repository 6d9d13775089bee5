"""Prepare the built-in offline assets (default model, enwiki corpus) in the compress engine."""

import time
from pathlib import Path

from thrifty.assets import corpora, models
from thrifty.core import paths, tasks
from thrifty.core.execute import run_in_engine
from thrifty.core.files import atomic_folder, read_json


def prepare_model(name: str, force: bool = False) -> dict:
    """Convert a built-in model once into the cache; return its manifest."""
    target = models.prepared_dir(name)
    if models.is_prepared(name) and not force:
        return read_json(target / models.MANIFEST)
    entry = models.builtin_models()[name]
    started = time.monotonic()
    with atomic_folder(target, force=True) as tmp:
        manifest = run_in_engine(
            tasks.CONVERT_GGUF,
            {"name": name, "module": entry["module"], "gguf_file": entry["gguf_file"],
             "out_dir": str(tmp)},
            _work_dir("prepare-model"), title=f"preparing {name}", engine=entry["engine"],
        )
    return {**manifest, "prepare_s": round(time.monotonic() - started, 1)}


def ensure_model(ref: str, allow_pickle: bool = False) -> models.ModelRef:
    """Resolve a model reference, preparing a built-in model on first use."""
    resolved = models.resolve(ref, allow_pickle=allow_pickle)
    if resolved.kind == "builtin" and not models.is_prepared(ref):
        prepare_model(ref)
    return resolved


def prepare_enwiki(force: bool = False) -> dict:
    target = corpora.enwiki_dir()
    if corpora.enwiki_ready() and not force:
        return read_json(target / "meta.json")
    with atomic_folder(target, force=True) as tmp:
        return run_in_engine(tasks.PREPARE_ENWIKI,
                             {"out_dir": str(tmp)}, _work_dir("prepare-corpus"),
                             title="preparing enwiki")


def ensure_corpus(spec: str, split: str) -> Path:
    if spec == corpora.ENWIKI and not corpora.enwiki_ready():
        prepare_enwiki()
    return corpora.resolve(spec, split)


def _work_dir(name: str) -> Path:
    folder = paths.home() / "work" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
