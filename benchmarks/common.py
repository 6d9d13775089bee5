"""Shared by the benchmark scripts (run from the repository root as `python benchmarks/X.py`)."""

import json
import subprocess
import sys
from pathlib import Path

from thrifty.core import runs


def thrifty(*args: str) -> dict:
    """Run `thrifty ... --json` as a user would and return its JSON; stop the script on failure."""
    done = subprocess.run([sys.executable, "-m", "thrifty", *args, "--json"],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"thrifty {' '.join(args)} failed")
    return json.loads(done.stdout)


def fingerprint() -> dict:
    """The one machine-and-code description every result records: thrifty's run fingerprint
    (git revision, versions, hardware, arguments), the same one run records carry."""
    return runs.fingerprint(("compress", "vllm"))


def machine_text(fp: dict) -> str:
    hw = fp["hardware"]
    gpus = ", ".join(g["name"] for g in hw["gpus"]) or "none"
    return (f"{hw['cpu_model']}, {hw['cpu_cores']} cores, {hw['ram_total_gib']} GiB RAM, "
            f"GPUs: {gpus}; thrifty {fp['git_revision'] or fp['thrifty_version']}")


PERCENT = "{:.1f}"  # percentages (top-1 agreement) in the result tables


def interval(value: float, ci: list[float], spec: str) -> str:
    """A measured value and its 95% interval, as the result tables print them."""
    return f"{spec.format(value)} [{spec.format(ci[0])}, {spec.format(ci[1])}]"


RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict, markdown) -> None:
    """results/NAME.json and its rendering results/NAME.md; the markdown is printed too."""
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def render_again(name: str, markdown) -> None:
    """Rewrite results/NAME.md from the committed results/NAME.json (--render-only)."""
    result = json.loads((RESULTS / f"{name}.json").read_text())
    (RESULTS / f"{name}.md").write_text(markdown(result))
