"""The stages of one plan, in order: make each variant, evaluate it against the base, bench it
here, calibrate the throughput model on the base's bench, cost every variant on every GPU."""

import hashlib
from importlib import resources
from pathlib import Path

from thrifty import __version__
from thrifty.core import hardware, paths
from thrifty.formats import calibration as calibration_file
from thrifty.plan.config import PlanConfig
from thrifty.plan.stages import Stage, fingerprint_path

# vLLM's CPU FP8 path is a fallback about 24x slower than bf16 here: benching it would take
# the plan's whole time for a figure no GPU deployment would see.
NOT_BENCHED_ON_CPU = {"fp8": "vLLM's CPU FP8 path is a slow fallback (no FP8 kernels on CPU), "
                             "so its speed here says nothing about a GPU; costed from the model"}


def variant_path(config: PlanConfig, model_path: str, variant: str) -> str:
    """The variant's checkpoint: the model itself for bf16, else <out>/variants/<model>-<variant>
    (the folder name is the name vLLM serves it under)."""
    if variant == "bf16":
        return model_path
    return str(Path(config.out) / "variants" / f"{Path(model_path).name}-{variant}")


def bench_skip_reason(variant: str) -> str:
    return "" if hardware.gpus() else NOT_BENCHED_ON_CPU.get(variant, "")


def build_stages(config: PlanConfig, model_path: str) -> list[Stage]:
    """Every stage with its command line, inputs and dependencies."""
    # what every result also depends on: thrifty itself and the machine it measured on
    model_print = {"model": fingerprint_path(model_path), "thrifty": __version__,
                   "machine": hardware.machine_name()}
    adapter_prints = {f"adapter {n}": fingerprint_path(p) for n, p in config.adapters.items()}
    stages: list[Stage] = []
    for variant in config.variants:
        if variant == "bf16":
            continue
        out = variant_path(config, model_path, variant)
        # The bench stage proves vLLM serves the checkpoint; one not benched here is checked
        # by quantize's own vLLM load instead.
        verify = [] if bench_skip_reason(variant) else ["--no-verify"]
        stages.append(Stage(f"quantize {variant}", [
            "quantize", model_path, *config.quantize_args(variant), "--out", out, "--force",
            *verify], model_print, outputs=(out,)))
        stages.append(Stage(f"eval {variant}", [
            "eval", model_path, out, "--label", "bf16", "--label", variant,
            "--max-tokens", str(config.eval_tokens), *_task_args(config)],
            model_print, after=(f"quantize {variant}",)))
    if config.variants == ("bf16",) and config.tasks:
        stages.append(Stage("eval bf16", ["eval", model_path, "--label", "bf16", "--max-tokens",
                                          str(config.eval_tokens), *_task_args(config)],
                            model_print))
    for variant in config.variants:
        if bench_skip_reason(variant):
            continue
        after = () if variant == "bf16" else (f"quantize {variant}",)
        stages.append(Stage(f"bench {variant}", [
            "bench", "run", "--model", variant_path(config, model_path, variant),
            *_adapter_args(config), *config.bench.args(), "--label", variant],
            {**model_print, **adapter_prints}, after=after))
    stages += _cost_stages(config, model_path, model_print)
    return stages


def _cost_stages(config: PlanConfig, model_path: str, model_print: dict) -> list[Stage]:
    """Calibrate on the first benched variant (the base where it is benched), then cost."""
    benched = [s for s in config.variants if not bench_skip_reason(s)]
    benched.sort(key=lambda v: v != "bf16")  # calibrate on the base where it is benched
    made = [variant_path(config, model_path, v) for v in config.variants if v != "bf16"]
    cost_argv = ["cost", "plan", model_path, *made, "--variants", "bf16",
                 *config.traffic.cost_args(), "--slo", config.slo_text,
                 "--pricing", config.pricing]
    if config.gpus:
        cost_argv += ["--gpu", ",".join(config.gpus)]
    after = tuple(f"quantize {v}" for v in config.variants if v != "bf16")
    stages = []
    if benched:
        first = f"bench {benched[0]}"
        stages.append(Stage("calibrate", ["cost", "calibrate", "{run:" + first + "}"],
                            after=(first,)))
        after += ("calibrate",)
    stages.append(Stage("cost", cost_argv, {**model_print, "catalog": catalog_print()},
                        after=after, extra=_calibration_arg))
    return stages


def catalog_print() -> str:
    """A hash of the GPU catalog cost reads: the shipped one and $THRIFTY_HOME/gpus.toml."""
    digest = hashlib.sha256((resources.files("thrifty") / "data" / "gpus.toml").read_bytes())
    user = paths.home() / "gpus.toml"
    if user.is_file():
        digest.update(user.read_bytes())
    return digest.hexdigest()


def _calibration_arg(results: dict) -> list[str]:
    path = gpu_calibration(results)
    return ["--calibration", path] if path else []


def gpu_calibration(results: dict) -> str | None:
    """The calibration to cost with: one made on a GPU; a CPU one only checks the model."""
    made = results.get("calibrate")
    if not made:
        return None
    data = calibration_file.load(made["calibration"])
    return made["calibration"] if data["hardware"].get("device") != "cpu" else None


def _task_args(config: PlanConfig) -> list[str]:
    return [arg for task in config.tasks for arg in ("--task", task)]


def _adapter_args(config: PlanConfig) -> list[str]:
    if not config.adapters:
        return []
    args = [arg for name, path in config.adapters.items()
            for arg in ("--adapter", f"{name}={path}")]
    share = 1 / (len(config.adapters) + 1)
    mix = ",".join(f"{name}={share:.3f}" for name in [*config.adapters, "base"])
    return [*args, "--adapter-mix", mix]
