"""The plan's stages: thrifty commands run as subprocesses, cached by a hash of their inputs.

Each stage is one thrifty command (`quantize`, `eval`, `bench run`, `cost ...`) with `--json`;
its key hashes the command line, the content of what it reads (files' sizes and mtimes, whole
small files) and the keys of the stages it depends on. `stages.json` in the plan folder keeps
each finished stage's key, result and time, so `--resume` reuses a stage whose key is
unchanged and re-runs those whose inputs changed (naming what changed) and what depends on them.
"""

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from thrifty.core import processes
from thrifty.core.errors import ThriftyError
from thrifty.core.files import read_json, write_json
from thrifty.core.progress import stderr

STATE_FILE = "stages.json"


class StageFailed(ThriftyError):
    """A thrifty command run by the plan exited non-zero."""


@dataclass
class Stage:
    name: str  # "quantize w8a8"
    argv: list[str]  # thrifty's arguments, --json added when run
    inputs: dict = field(default_factory=dict)  # what else the result depends on
    after: tuple[str, ...] = ()  # stages whose results this one reads
    outputs: tuple[str, ...] = ()  # paths the result needs to still exist to be reused
    # more arguments, read from the results of the stages before it
    extra: Callable[[dict], list[str]] | None = None

    def resolved(self, results: dict[str, dict]) -> "Stage":
        """The stage with "{run:STAGE}" replaced by that stage's run folder, and its extra
        arguments added."""
        def run_of(match: re.Match) -> str:
            return results[match.group(1)]["run"]
        argv = [re.sub(r"\{run:([^}]+)\}", run_of, arg) for arg in self.argv]
        return replace(self, argv=argv + (self.extra(results) if self.extra else []),
                       extra=None)


def fingerprint_path(path: str | Path) -> dict:
    """What identifies a model or adapter folder's content without reading gigabytes: each
    file's size and mtime, and the full text of its small JSON files (config, tokenizer
    config, adapter config)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    entries = {}
    for file in files:
        stat = file.stat()
        entry = [stat.st_size, int(stat.st_mtime)]
        if file.suffix == ".json" and stat.st_size < 1 << 20:
            entry.append(hashlib.sha256(file.read_bytes()).hexdigest()[:16])
        entries[str(file.relative_to(path) if path.is_dir() else file.name)] = entry
    return {"path": str(path.resolve()), "files": entries}


def stage_key(stage: Stage, upstream: dict[str, str]) -> str:
    payload = {"argv": stage.argv, "inputs": stage.inputs,
               "after": {name: upstream[name] for name in stage.after}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def changed_inputs(old: dict, stage: Stage, upstream_changed: list[str]) -> str:
    """A short account of why a stage's key changed since the recorded run."""
    reasons = [f"{name} changed" for name in stage.after if name in upstream_changed]
    if old.get("argv") != stage.argv:
        reasons.append("its command line changed: "
                       f"{' '.join(old.get('argv', []))} -> {' '.join(stage.argv)}")
    for key in sorted(set(old.get("inputs", {})) | set(stage.inputs)):
        if old.get("inputs", {}).get(key) != stage.inputs.get(key):
            reasons.append(f"input {key!r} changed")
    return "; ".join(reasons) or "its inputs changed"


def missing_outputs(stage: Stage, result: dict) -> list[str]:
    """The stage's outputs, run folder and calibration file that no longer exist."""
    paths = [*stage.outputs, result.get("run"), result.get("calibration")]
    # (a quantize result's "calibration" describes its data, not a file)
    return [p for p in paths if isinstance(p, str) and p and not Path(p).exists()]


class StageRunner:
    """Runs stages in order with a progress line per stage and an ETA from those run so far."""

    def __init__(self, folder: Path, stages: list[Stage], resume: bool, quiet: bool = False):
        self.folder = folder
        self.stages = stages
        self.resume = resume
        self.quiet = quiet
        self.state: dict = read_json(folder / STATE_FILE) if resume and \
            (folder / STATE_FILE).is_file() else {}
        self.keys: dict[str, str] = {}
        self.changed: list[str] = []  # stages re-run because their inputs changed
        self.timings: dict[str, dict] = {}

    def run_all(self) -> dict[str, dict]:
        results = {}
        started = time.monotonic()
        ran_s: list[float] = []
        for index, planned in enumerate(self.stages):
            stage = planned.resolved(results)
            key = stage_key(stage, self.keys)
            self.keys[stage.name] = key
            old = self.state.get(stage.name)
            gone = missing_outputs(stage, old["result"]) if old else []
            if old and old["key"] == key and not gone:
                results[stage.name] = old["result"]
                self.timings[stage.name] = {"elapsed_s": old["elapsed_s"], "cached": True}
                self._say(index, stage, "reused (inputs unchanged)", started, ran_s)
                continue
            if old:
                why = (changed_inputs(old, stage, self.changed) if old["key"] != key
                       else f"what it made is gone ({gone[0]})")
                self.changed.append(stage.name)
                stderr.print(f"[yellow]plan:[/] re-running {stage.name}: {why}.")
            self._say(index, stage, "running", started, ran_s)
            result, elapsed = run_thrifty(stage)
            ran_s.append(elapsed)
            results[stage.name] = result
            self.timings[stage.name] = {"elapsed_s": round(elapsed, 1), "cached": False}
            self.state[stage.name] = {"key": key, "argv": stage.argv, "inputs": stage.inputs,
                                      "result": result, "elapsed_s": round(elapsed, 1)}
            write_json(self.folder / STATE_FILE, self.state)
        return results

    def _say(self, index: int, stage: Stage, what: str, started: float,
             ran_s: list[float]) -> None:
        if self.quiet:
            return
        left = len(self.stages) - index
        eta = (f", about {_minutes(sum(ran_s) / len(ran_s) * left)} left"
               if ran_s and what == "running" else "")
        stderr.rule(f"[bold]plan stage {index + 1}/{len(self.stages)}: {stage.name}[/] ({what}; "
                    f"{index} done, {_minutes(time.monotonic() - started)} elapsed{eta})")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_thrifty(stage: Stage) -> tuple[dict, float]:
    """Run `thrifty ARGV --json` (its progress shows on stderr); its JSON and the seconds it
    took."""
    command = [sys.executable, "-m", "thrifty", *stage.argv, "--json"]
    started = time.monotonic()
    done = processes.run_child(command, stdout=subprocess.PIPE)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise StageFailed(f"The plan's stage '{stage.name}' failed: `thrifty "
                          f"{' '.join(stage.argv)}` exited with status {done.returncode} (its "
                          "error is above). The stages before it are kept: fix the cause and "
                          "rerun the same command with --resume to continue from this stage.")
    try:
        return json.loads(done.stdout), elapsed
    except json.JSONDecodeError as exc:
        raise StageFailed(f"The plan's stage '{stage.name}' printed no JSON result (`thrifty "
                          f"{' '.join(stage.argv)} --json`: {exc}). This is a bug in thrifty; "
                          "rerun with --debug and report it.") from exc
