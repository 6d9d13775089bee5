"""Memory kept per LoRA adapter load and unload in vLLM, with and without thrifty's loader fix
(thrifty/libs/vllm_lora_load.py, a vLLM plugin).

Each run starts one vLLM process on the W4A16 default model (the soak's base) and loads and
unloads the four demo adapters --cycles times (benchmarks/lora_load_engine.py); the figure is
the least-squares slope of its RSS over the cycles, in KiB per load+unload. "without the fix"
enables only thrifty's other plugin (VLLM_PLUGINS=thrifty_cpu_lora). --repeats runs of each,
alternating.

    .venv/bin/python benchmarks/lora_load_memory.py [--cycles 600] [--repeats 3]
Writes results/lora_load_memory.json and .md.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
from pathlib import Path

import common
import soak

from thrifty.core import engines
from thrifty.core.jobs import engine_pythonpath
from thrifty.serve import demo_adapters

HERE = Path(__file__).resolve().parent
VARIANTS = {"without the fix": "thrifty_cpu_lora", "with the fix": None}


def run_once(plugins: str | None, cycles: int) -> dict:
    env = {**os.environ, "PYTHONPATH": engine_pythonpath()}
    env.pop("VLLM_PLUGINS", None)
    if plugins:
        env["VLLM_PLUGINS"] = plugins
    done = subprocess.run([engines.python_for("vllm"), str(HERE / "lora_load_engine.py"),
                           str(soak.base_checkpoint()), str(demo_adapters.default_dir()),
                           str(cycles)], capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the engine run failed:\n{done.stderr[-3000:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    fit = statistics.linear_regression([s["cycle"] for s in raw["samples"]],
                                       [s["rss_mib"] for s in raw["samples"]])
    return {**raw, "kib_per_cycle": round(fit.slope * 1024, 2)}


def markdown(result: dict) -> str:
    lines = ["# Memory kept per LoRA adapter load and unload in vLLM", "",
             f"Measured: `benchmarks/lora_load_memory.py --cycles {result['cycles']} --repeats "
             f"{result['repeats']}`, {result['date']}, on "
             f"{common.machine_text(result['fingerprint'])}. One vLLM process loads and "
             "unloads the 4 demo adapters (420 tensors each) over the W4A16 default model; "
             "slope of its RSS over the cycles.", "",
             "| loader | KiB of RSS kept per load+unload: median (range) | runs |",
             "|---|---|---|"]
    for variant, runs in result["variants"].items():
        values = [r["kib_per_cycle"] for r in runs]
        lines.append(f"| {variant} | {statistics.median(values):g} ({min(values):g}–"
                     f"{max(values):g}) | {', '.join(f'{v:g}' for v in values)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if len(demo_adapters.trained(demo_adapters.default_dir())) < 4:
        raise SystemExit("the demo adapters are missing: run `thrifty adapters demo` first")
    variants: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, plugins in VARIANTS.items():
            variants[name].append(run_once(plugins, args.cycles))
            print(name, variants[name][-1]["kib_per_cycle"], "KiB per cycle", flush=True)
    common.write_result("lora_load_memory", {
        "benchmark": "lora_load_memory", "cycles": args.cycles, "repeats": args.repeats,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "fingerprint": common.fingerprint(), "variants": variants}, markdown)


if __name__ == "__main__":
    main()
