"""`thrifty quantize`: GPTQ, AWQ or RTN weight quantization (llm-compressor), checked in vLLM."""

from pathlib import Path

import click

from thrifty.assets import architectures, prepare
from thrifty.compress import schemes
from thrifty.core import tasks
from thrifty.core.errors import BadInput, ThriftyError
from thrifty.core.execute import run_in_engine
from thrifty.core.files import (
    atomic_folder,
    check_output_free,
    files_sha256,
    read_json,
    weights_bytes,
)
from thrifty.core.numbers import mib
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.runs import RunRecord
from thrifty.formats import lora_adapter as adapters
from thrifty.formats import quantize_manifest

VERIFY_PROMPT = "The capital of France is"
VLLM_WEIGHT_BITS = (4, 8)  # what vLLM's WNA16 kernels implement


def group_size_type(value: str) -> str | int:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter("must be 'auto' or a positive integer such as 64")


def _adapter_inputs(model: str, base_path: str, adapter: str, weight: float) -> dict:
    """Check that the adapter can be merged into MODEL; what the output records of both."""
    if quantize_manifest.is_quantized(base_path) or _has_quantization_config(base_path):
        raise BadInput(f"{model} is already quantized, and merging an adapter needs the "
                       "unquantized weights it was trained on. Give the unquantized base: "
                       f"thrifty quantize BASE --adapter {adapter} --out OUT")
    info = adapters.validate(adapter, base_path, model)
    folder = Path(info.path)
    base_shards = sorted(Path(base_path).glob("*.safetensors"))
    return {**info.to_dict(), "weight": weight,
            "weights_sha256": files_sha256([folder / adapters.WEIGHTS_FILE]),
            "base_weights_sha256": files_sha256(base_shards) if base_shards else None}


def _has_quantization_config(model_path: str) -> bool:
    config = Path(model_path) / "config.json"
    return config.is_file() and "quantization_config" in read_json(config)


def _scheme_option(ctx, param, value: str) -> str:
    try:
        return schemes.scheme_named(value)
    except BadInput as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("model")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder to write the quantized checkpoint to (must not exist without --force).")
@click.option("--method", type=click.Choice(["gptq", "awq", "awq-gptq", "rtn"]),
              help="GPTQ (error-correcting, needs calibration), AWQ (activation-aware scaling, "
              "needs calibration; weight-only schemes), awq-gptq (AWQ's scaling, then GPTQ on "
              "the scaled weights, with the imatrix-mse observer unless --observer says "
              "otherwise: the best 4-bit recipe in thrifty's benchmarks) or RTN "
              "(round-to-nearest, no data). Default: gptq for integer schemes, rtn for FP8 "
              "ones.")
@click.option("--observer", type=click.Choice(["minmax", "mse", "imatrix-mse"]),
              help="How weight scales are chosen: min-max of each group (llm-compressor's "
              "default), the scale with the least squared rounding error (mse), or that error "
              "weighted by each input channel's activation energy from the calibration data "
              "(imatrix-mse, as llama.cpp's importance matrix; the default with awq-gptq).")
@click.option("--scheme", default="W4A16_ASYM", show_default=True, callback=_scheme_option,
              help="W4A16_ASYM (4-bit weights with zero points; the default, as it kept the "
              "most quality in thrifty's benchmarks), W4A16 (symmetric), W8A16: weight-only, "
              "activations stay in 16 bits. W8A8: INT8 weights per channel and "
              "activations per token (INT8 matmuls; the fast one on CPUs and Ampere/Turing "
              "GPUs). FP8_DYNAMIC: FP8 weights and per-token activations, no calibration "
              "(Ada/Hopper GPUs). FP8_BLOCK: FP8 weights in 128x128 blocks, no calibration "
              "(layer widths must be multiples of 128). FP8: FP8 with static per-tensor "
              "activation scales.")
@click.option("--smoothquant", type=click.FloatRange(0, 1, max_open=True),
              help="W8A8: SmoothQuant strength, migrating activation outliers into the weights "
              f"before quantizing (default {schemes.DEFAULT_SMOOTHQUANT}, as llm-compressor's "
              "W8A8 example; 0 turns it off).")
@click.option("--bits", type=click.IntRange(2, 8),
              help="Override the scheme's weight bits (e.g. 3, to see quality differences on "
              "small models). vLLM's kernels load 4- and 8-bit weights.")
@click.option("--group-size", type=group_size_type, default="auto", show_default=True,
              help="Weights per scale. 'auto' takes 128 if it divides every quantized layer's "
              "input width, else the largest of 64 and 32 that does.")
@click.option("--calib", default="enwiki", show_default=True,
              help="Calibration text: `enwiki` (its calibration split) or a .txt / .jsonl file.")
@click.option("--num-samples", type=click.IntRange(min=1), default=128, show_default=True,
              help="Calibration samples (512 is usual for 7B+ models on a GPU).")
@click.option("--seq-len", type=click.IntRange(min=16), default=512, show_default=True,
              help="Tokens per calibration sample (2048 is usual on a GPU).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which calibration samples are drawn: documents are shuffled with this seed "
              "(another seed, another draw of the same size, to see how much a result owes to "
              "the draw).")
@click.option("--actorder/--no-actorder", default=True, show_default=True,
              help="GPTQ: quantize columns in order of activation magnitude (static).")
@click.option("--dampening", "dampening_frac", type=click.FloatRange(0, 1, min_open=True),
              default=0.01, show_default=True, help="GPTQ: Hessian dampening fraction.")
@click.option("--block-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="GPTQ: columns updated per block.")
@click.option("--adapter", "adapter", type=click.Path(),
              help="A LoRA adapter folder (PEFT, safetensors) trained on MODEL: it is merged "
              "into MODEL's weights first, then the merged model is quantized.")
@click.option("--adapter-weight", type=click.FloatRange(0, min_open=True), default=1.0,
              show_default=True, help="Scale of the adapter's update when merging (1: as "
              "trained).")
@click.option("--ignore", multiple=True, metavar="LAYER",
              help="Keep these linear layers unquantized, in 16 bits (lm_head always is): the "
              "end of a layer's name (down_proj: every layer's; layers.11.mlp.down_proj: one) "
              "or a regex after 're:', as llm-compressor's ignore. Repeatable. W8A8 with "
              "--ignore down_proj keeps the layers whose inputs hold the largest activation "
              "outliers at 16 bits (see docs/quantization.md).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--no-verify", is_flag=True,
              help="Skip loading the result in the vllm engine and generating from it.")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle (.bin) weights in MODEL.")
@json_option
def quantize(model: str, out: str, method: str | None, scheme: str, smoothquant: float | None,
             bits: int | None, group_size: str | int, calib: str, num_samples: int,
             seq_len: int, seed: int, actorder: bool, dampening_frac: float, block_size: int,
             observer: str | None, adapter: str | None, adapter_weight: float,
             ignore: tuple[str, ...], force: bool, no_verify: bool, allow_pickle: bool,
             as_json: bool) -> None:
    """Quantize MODEL's weights with llm-compressor and save a compressed-tensors checkpoint.

    Runs in the compress engine, on CPU or GPU. Before calibration it checks the architecture,
    the group size against every layer, memory and disk. The output is written to a temporary
    folder and renamed into place when complete; `thrifty-quantize.json` in it records the
    recipe, versions and a hash of the calibration data. Then vLLM loads the result and
    generates from it (unless --no-verify); a checkpoint vLLM cannot load is kept but marked
    unverified, and the command fails.
    """
    recipe = schemes.resolve(scheme, method, bits, group_size, smoothquant)
    observer = _observer(recipe, observer)
    out_dir, ref = _inputs(model, out, force, allow_pickle)
    merging = _adapter_inputs(model, ref.path, adapter, adapter_weight) if adapter else None
    if not no_verify:
        _warn_before_work(recipe)
    calib_path = prepare.ensure_corpus(calib, "calibration") if recipe.needs_data else None
    params = {"model_path": ref.path, "method": recipe.method, "scheme": scheme,
              "bits": recipe.bits, "symmetric": recipe.symmetric, "group_size": group_size,
              "smoothquant": recipe.smoothquant, "needs_data": recipe.needs_data,
              "calib": calib, "calib_path": str(calib_path) if calib_path else None,
              "num_samples": num_samples, "seq_len": seq_len, "seed": seed, "actorder": actorder,
              "dampening_frac": dampening_frac, "block_size": block_size, "observer": observer,
              "adapter_path": merging["path"] if merging else None,
              "adapter_weight": adapter_weight, "ignore": list(ignore)}
    engines_used = ("compress",) if no_verify else ("compress", "vllm")
    with RunRecord("quantize", {**params, "model": model, "out": str(out_dir)},
                   engines_used=engines_used) as run:
        with atomic_folder(out_dir, force=force) as tmp:
            result = run_in_engine(tasks.QUANTIZE,
                                   {**params, "out_dir": str(tmp)}, run.path,
                                   title=f"quantizing {model}")
            manifest = {"base_model": ref.path, "base_model_name": model, **result,
                        "adapter": merging, "verified": None, "run": str(run.path)}
            quantize_manifest.write(tmp, manifest)
        manifest["weights_bytes"] = weights_bytes(out_dir)
        manifest["base_weights_bytes"] = weights_bytes(Path(ref.path))
        if not no_verify:
            manifest.update(_verify(out_dir, run.path))
        quantize_manifest.write(out_dir, manifest)
        run.record({"quantize_s": result["quantize_s"], "calibrate_s": result["calibrate_s"],
                    "weights_bytes": manifest["weights_bytes"],
                    **({"verify_s": manifest["verify_s"]} if "verify_s" in manifest else {})},
                   details=manifest)
        if manifest["verified"] is False:
            raise ThriftyError(
                f"vLLM could not load the quantized checkpoint, so it is not servable as is. "
                f"It is kept at {out_dir}, marked unverified in {quantize_manifest.MANIFEST}. "
                f"{manifest['verify_error']}")
    if as_json:
        emit_json(manifest)
        return
    _print_summary(model, out_dir, manifest)


def _observer(recipe: schemes.Recipe, observer: str | None) -> str | None:
    """The weight observer: as given, imatrix-mse for awq-gptq (part of the recipe that kept
    the most quality in thrifty's benchmarks), else llm-compressor's default."""
    if observer is None and recipe.method == "awq-gptq":
        observer = "imatrix-mse"
    if observer == "imatrix-mse" and not recipe.needs_data:
        raise BadInput(f"--observer imatrix-mse weighs rounding errors by activations measured "
                       f"on calibration data, and --method {recipe.method} reads none. Use it "
                       "with --method gptq, awq or awq-gptq, or pick --observer mse.")
    return observer


def _warn_before_work(recipe: schemes.Recipe) -> None:
    """Say what the vLLM check will meet before the long work starts (or refuse, where this
    machine cannot run the scheme at all)."""
    if recipe.bits not in VLLM_WEIGHT_BITS:
        kernels = " and ".join(map(str, VLLM_WEIGHT_BITS))
        click.echo(f"Note: vLLM has weight-only kernels for {kernels}-bit weights, so this "
                   f"{recipe.bits}-bit checkpoint will likely fail the vLLM check (it is kept, "
                   "marked unverified). --no-verify skips the check.", err=True)
    note = schemes.hardware_note(recipe.scheme)
    if note:
        click.echo(f"Note: {note}", err=True)


def _inputs(model: str, out: str, force: bool, allow_pickle: bool) -> tuple[Path, object]:
    """The output folder (free, or --force) and the resolved model, not one inside the other."""
    out_dir = Path(out).expanduser().resolve()
    check_output_free(out_dir, force)
    ref = prepare.ensure_model(model, allow_pickle=allow_pickle)
    architectures.check_vllm_serves(ref, "writes checkpoints for vLLM to serve")
    if ref.kind != "hub" and (out_dir == Path(ref.path) or Path(ref.path) in out_dir.parents):
        raise BadInput(f"--out {out_dir} is inside the model folder {ref.path}; choose a folder "
                       "outside it.")
    return out_dir, ref


def _verify(out_dir: Path, run_dir: Path) -> dict:
    """Load the checkpoint in the vllm engine and generate a few tokens from it."""
    try:
        generated = run_in_engine(
            tasks.GENERATE,
            {"model": str(out_dir), "prompts": [VERIFY_PROMPT], "max_tokens": 12,
             "max_model_len": 512, "compile": False},
            run_dir, title="verifying in vLLM")
    except ThriftyError as exc:
        return {"verified": False, "verify_error": str(exc)}
    completion = generated["completions"][0]
    return {"verified": True, "verify_s": generated["engine_start_s"] + generated["generate_s"],
            "verify_sample": completion["prompt"] + completion["text"],
            "verify_vllm_version": generated["vllm_version"]}


def _print_summary(model: str, out_dir: Path, m: dict) -> None:
    calib = m["calibration"]
    ratio = (f" ({m['base_weights_bytes'] / m['weights_bytes']:.2f}x smaller)"
             if m.get("base_weights_bytes") else "")
    smoothing = (f", after SmoothQuant (strength {m['smoothquant']:g})"
                 if m.get("smoothquant") else "")
    rows = [
        ["method", f"{m['method'].upper()} {m['scheme']}, {m['bits']}-bit "
                   f"{'symmetric' if m['symmetric'] else 'asymmetric'}{smoothing}"],
        *([["adapter", f"{m['adapter']['path']} merged first (rank {m['adapter']['rank']}, "
                       f"weight {m['adapter']['weight']:g})"]] if m.get("adapter") else []),
        ["activations", m.get("activations") or "16-bit (weight-only)"],
        ["scales", m["group_size_note"]],
        ["layers", f"{m['layers_count']} linear layers quantized (lm_head kept)"],
        ["calibration", f"{calib['samples_count']} samples x {calib['seq_len_tokens']} tokens "
                        f"from {calib['corpus']}" if calib["samples_count"] else "none"],
        ["size", f"{mib(m.get('base_weights_bytes'))} -> {mib(m['weights_bytes'])}{ratio}"],
        ["time", f"{m['quantize_s']} s (calibration {m['calibrate_s']} s)"],
        ["vLLM check", "skipped (--no-verify)" if m["verified"] is None
         else f"loads and generates: {m['verify_sample']!r}"],
        ["output", str(out_dir)],
    ]
    table(f"Quantized {model}", ["", ""], rows)
