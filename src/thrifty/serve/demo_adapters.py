"""Demo LoRA adapters for the default model, trained once into the thrifty cache.

Each adapter is trained on its own topical slice of the enwiki calibration split (listed in
data/demo_adapters.json), briefly but hard enough that its greedy completions differ visibly
from the base and from each other: real adapters for the demo, the tests and the benchmarks.
"""

import json
import shutil
import time
from importlib import resources
from pathlib import Path

from thrifty.assets import corpora, prepare
from thrifty.core import paths, tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import read_json, write_json

DEMO_BASE = "smollm2-135m"
MANIFEST = "thrifty-adapter.json"
# Rank 8 on every projection of every block; 12 steps of 2 x 128 tokens at a high learning
# rate take ~20 s per adapter on two CPU cores and move the completions towards the topic.
TRAINING = {"rank": 8, "alpha": 16, "seq_len": 128, "batch_size": 2, "steps": 12,
            "learning_rate": 3e-3, "seed": 0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                               "up_proj", "down_proj"]}


def specs() -> dict[str, dict]:
    data = json.loads((resources.files("thrifty") / "data" / "demo_adapters.json").read_text())
    return {name: spec for name, spec in data.items() if not name.startswith("_")}


def default_dir() -> Path:
    return paths.adapters_dir() / "demo"


def trained(folder: Path) -> dict[str, Path]:
    return {name: folder / name for name in specs() if (folder / name / MANIFEST).is_file()}


def train(out: Path | None = None, names: list[str] | None = None, force: bool = False,
          steps: int | None = None) -> list[dict]:
    """Train the named demo adapters (all by default) that are not there yet; return manifests."""
    out = Path(out or default_dir()).expanduser().resolve()
    wanted = names or list(specs())
    unknown = [n for n in wanted if n not in specs()]
    if unknown:
        raise BadInput(f"No demo adapter named {', '.join(map(repr, unknown))}; the demo "
                       f"adapters are {', '.join(specs())}.")
    todo = [n for n in wanted if force or not (out / n / MANIFEST).is_file()]
    if todo:
        _train(out, todo, {**TRAINING, **({"steps": steps} if steps else {})})
    return [read_json(out / n / MANIFEST) for n in wanted]


def _train(out: Path, names: list[str], training: dict) -> None:
    base = prepare.ensure_model(DEMO_BASE)
    prepare.ensure_corpus(corpora.ENWIKI, "calibration")
    articles = corpora.enwiki_articles("calibration")
    slices = []
    for name in names:
        titles = specs()[name]["titles"]
        missing = [t for t in titles if t not in articles]
        if missing:
            raise BadInput(f"The enwiki corpus lacks {missing} for demo adapter {name!r}; "
                           "rebuild it with `thrifty corpora prepare --force`.")
        slices.append({"name": name, "texts": [articles[t] for t in titles]})
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".training-{time.strftime('%Y%m%d-%H%M%S')}"
    work = paths.home() / "work" / staging.name
    try:
        result = run_in_engine(tasks.TRAIN_ADAPTERS,
                               {**training, "base_path": base.path, "slices": slices,
                                "out_dir": str(staging)},
                               work, title=f"training {len(names)} demo adapter(s)")
        for adapter in result["adapters"]:
            name = adapter["name"]
            write_json(staging / name / MANIFEST, {
                "name": name, "base_model": DEMO_BASE, "description": specs()[name]["description"],
                "trained_on_titles": specs()[name]["titles"], "training": training,
                "loss_first": adapter["loss_first"], "loss_last": adapter["loss_last"],
                "train_s": adapter["train_s"], "path": str(out / name)})
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            (staging / name).rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
