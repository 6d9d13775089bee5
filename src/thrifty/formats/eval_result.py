"""The result of a `thrifty eval` run (`result.json` in its run folder), as other parts read
it: `thrifty cost --quality RUN` shows each costed checkpoint's quality beside its dollars."""

from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.files import read_json

MEASURES = ("kld_mean", "top1_agreement_pct", "delta_log_ppl")


def quality_of(quality: dict, model_ref: str) -> dict | None:
    """The evaluated quality of the model MODEL names (its resolved folder, its folder's name
    or its eval label), or None."""
    path = Path(model_ref).expanduser()
    keys = ([str(path.resolve())] if path.exists() else []) + [path.name, model_ref]
    return next((quality["models"][k] for k in keys if k in quality["models"]), None)


def load_quality(run: str | Path) -> dict:
    """Each evaluated model's quality against the run's first model, keyed by its folder's
    name and its label: {"run", "reference", "models": {name: {...}}}. Rows evaluated with an
    adapter over them are left out (they are not the checkpoint that is costed)."""
    path = Path(run).expanduser()
    result_file = path / "result.json" if path.is_dir() else path
    if not result_file.is_file():
        raise BadInput(f"--quality {run}: no eval result there. Give the run folder that "
                       "`thrifty eval` printed (\"Run record: ...\") or its result.json.")
    result = read_json(result_file)
    rows = (result.get("details") or {}).get("rows")
    if result.get("command") != "eval" or not rows:
        raise BadInput(f"--quality {run} is a `thrifty {result.get('command')}` run, not a "
                       "`thrifty eval` run with rows; give the run folder of `thrifty eval "
                       "BASE CANDIDATE...`.")
    models = {}
    for row in rows:
        if row.get("adapter"):
            continue
        vs = row.get("vs_base") or {}
        entry = {"label": row["label"], "path": row["path"], "perplexity": row["perplexity"],
                 "reference": row is rows[0], **{key: vs.get(key) for key in MEASURES}}
        models.setdefault(str(Path(row["path"]).resolve()), entry)
        models.setdefault(Path(row["path"]).name, entry)
        models.setdefault(row["label"], entry)
    return {"run": str(result_file.parent), "reference": rows[0]["label"], "models": models}
