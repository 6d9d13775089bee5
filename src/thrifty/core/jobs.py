"""Jobs: how the CLI runs work in an engine environment, and how a worker answers.

The CLI writes a job file and starts `<engine python> -m thrifty.<part>.worker <job file>`.
The worker streams one JSON event per line on its stdout (progress, status, a user error) and
writes its result JSON; everything libraries print goes to its stderr, which is the job's log.
Only the standard library is used here: workers import this module inside engine envs.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from thrifty.core import errors, paths, processes
from thrifty.core.files import read_json, tail, write_json, write_text

EventHandler = Callable[[dict], None]

# --- worker side -------------------------------------------------------------------------


class Events:
    """What a worker tells the CLI while it runs."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def emit(self, **event) -> None:
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()

    def progress(self, stage: str, done: int, total: int | None, unit: str = "") -> None:
        self.emit(type="progress", stage=stage, done=done, total=total, unit=unit)

    def status(self, text: str) -> None:
        self.emit(type="status", text=text)


Task = Callable[[dict, Events], dict]


def worker_main(tasks: dict[str, Task]) -> None:
    """Entry point of every `thrifty.<part>.worker` module.

    Under a distributed launcher (torchrun, accelerate launch) every process runs the task;
    only rank 0 reports events and writes the result.
    """
    processes.watch_parent()  # a killed CLI must not leave this worker and its children behind
    lead = os.environ.get("RANK", "0") == "0"
    # Keep the real stdout for events only; anything a library prints goes to stderr (the log).
    stream = os.fdopen(os.dup(1) if lead else os.open(os.devnull, os.O_WRONLY), "w", buffering=1)
    events = Events(stream)
    os.dup2(2, 1)
    job = read_json(Path(sys.argv[1]))
    task = tasks.get(job["task"])
    if task is None:
        events.emit(type="error", kind="BadInput",
                    message=f"This worker has no task {job['task']!r} (it has {sorted(tasks)}).")
        sys.exit(3)
    try:
        result = task(job["params"], events)
    except errors.ThriftyError as exc:
        events.emit(type="error", kind=type(exc).__name__, message=str(exc))
        sys.exit(3)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)
    if lead:
        write_json(Path(job["result_path"]), result)
        events.emit(type="done")


# --- CLI side ----------------------------------------------------------------------------


def engine_pythonpath() -> str:
    """A folder holding only a link to this thrifty package, for engines to import it from.

    Engines import thrifty from the same source tree as the CLI (so the two never drift), but
    must not see the CLI's other site-packages.
    """
    package = paths.package_dir()
    key = hashlib.sha1(str(package).encode()).hexdigest()[:12]
    folder = paths.home() / "pythonpath" / key
    link = folder / "thrifty"
    if not (link.is_symlink() and link.resolve() == package):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".thrifty-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(package, target_is_directory=True)
        os.replace(tmp, link)
    _write_plugin_entry_points(folder)
    return str(folder)


# vLLM runs its "general plugins" in every process it starts (API server, engine core,
# workers), however they are started; an entry point is how thrifty's fixes reach them all.
PLUGINS = "thrifty_engine_plugins-1.0.dist-info"
ENTRY_POINTS = ("[vllm.general_plugins]\n"
                "thrifty_cpu_lora = thrifty.libs.vllm_cpu_lora:install\n"
                "thrifty_lora_load = thrifty.libs.vllm_lora_load:install\n"
                "thrifty_lora_ids = thrifty.libs.vllm_lora_ids:install\n"
                "thrifty_lora_device = thrifty.libs.vllm_lora_device:install\n"
                "thrifty_memory_trace = thrifty.libs.vllm_memory_trace:install\n")


def _write_plugin_entry_points(folder: Path) -> None:
    dist = folder / PLUGINS
    if (dist / "entry_points.txt").is_file() and (
            dist / "entry_points.txt").read_text() == ENTRY_POINTS:
        return
    dist.mkdir(exist_ok=True)
    write_text(dist / "METADATA", "Metadata-Version: 2.1\nName: thrifty-engine-plugins\n"
                                  "Version: 1.0\n")
    write_text(dist / "entry_points.txt", ENTRY_POINTS)


def run_job(python: str, module: str, task: str, params: dict, workdir: Path,
            on_event: EventHandler = lambda event: None, env: dict | None = None,
            launcher: list[str] | None = None) -> dict:
    """Run one task in an engine and return its result; raise a ThriftyError if it fails.

    `launcher` runs the worker module through a launcher module of the engine, e.g.
    ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"].
    """
    workdir = Path(workdir)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    job_file = workdir / f"job-{task}.json"
    result_file = workdir / f"result-{task}.json"
    log_file = workdir / "logs" / f"{task}.log"
    result_file.unlink(missing_ok=True)
    write_json(job_file, {"task": task, "params": params, "result_path": str(result_file)})

    child_env = {**os.environ, **(env or {})}
    # Only thrifty itself (plus what the caller adds), never the CLI's own site-packages.
    extra = (env or {}).get("PYTHONPATH")
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (engine_pythonpath(), extra) if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    user_error, finished = None, False
    with log_file.open("w") as log:
        proc = subprocess.Popen([python, *(launcher or []), "-m", module, str(job_file)],
                                stdout=subprocess.PIPE,
                                stderr=log, text=True, env=child_env,
                                **processes.spawn_options())
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("type") == "error":
                    user_error = event
                else:
                    finished = finished or event.get("type") == "done"
                    on_event(event)
            code = proc.wait()
        except BaseException:
            processes.stop_process_group(proc)
            raise
        # a worker that died by itself (OOM kill, crash) leaves its children (EngineCore) behind
        processes.end_group(proc.pid, grace_s=5.0)
    if code != 0 and finished and result_file.is_file():
        # The task finished and wrote its result; the crash came in the interpreter's teardown
        # (vLLM's engine threads can abort there: "terminate called without an active
        # exception"). The result stands; the log keeps the crash.
        with log_file.open("a") as log:
            log.write(f"\n[thrifty] exit code {code} after the task finished; result kept\n")
        code = 0
    if code != 0:
        if user_error:
            kind = getattr(errors, user_error.get("kind", ""), errors.ThriftyError)
            if not (isinstance(kind, type) and issubclass(kind, errors.ThriftyError)):
                kind = errors.ThriftyError
            raise kind(user_error["message"])
        cause = likely_cause(log_file)
        raise errors.WorkerFailed(
            f"The {task!r} job ({module}) crashed with exit code {code}"
            + (f": {cause}" if cause else "") + ". "
            f"Read its full log at {log_file}.\n"
            f"Last lines of the log:\n{tail(log_file, 20)}"
        )
    if not result_file.is_file():
        raise errors.WorkerFailed(f"The {task!r} job finished without writing {result_file}.")
    return read_json(result_file)


# an exception's own line: at the start of a line, of a log record's message ("...] X: ...") or
# of torch's rank prefix ("[rank0]: X: ..."), so that a warning that merely quotes one ("errors
# like `OSError: ...`") is not taken for it
EXCEPTION_LINE = re.compile(r"(?:^|\]:? )\s*([A-Za-z_][A-Za-z_.]*(?:Error|Exception)): (.+)$")
WRAPPER_ERRORS = ("Engine core initialization failed",)  # vLLM re-raises the real cause


def likely_cause(log_file: Path) -> str | None:
    """The first exception line in a log: with multi-process engines such as vLLM the root
    cause comes first and the last lines only say that a child process failed."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = EXCEPTION_LINE.search(line)
        if match and not any(w in match.group(2) for w in WRAPPER_ERRORS):
            return f"{match.group(1)}: {match.group(2).strip()}"
    return None
