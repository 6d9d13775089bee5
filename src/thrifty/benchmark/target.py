"""The server under test: connect to a running one (`--url`), or start one in the vllm engine
for the run (`--model`) and read its start-up memory report."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from thrifty.benchmark import run as runner
from thrifty.benchmark import workload
from thrifty.benchmark.memory import GpuPlacement, parse_startup_log
from thrifty.core import hardware, processes
from thrifty.core.errors import BadInput, ThriftyError
from thrifty.core.files import tail
from thrifty.core.progress import stderr
from thrifty.formats.openai_api import ServerClient, ServerError


def connect(url: str, api_key: str | None, served_model: str | None) -> runner.Target:
    client = ServerClient(url, api_key, timeout_s=10.0)
    try:
        served = client.models()
    except ServerError as exc:
        if exc.status in (401, 403):
            raise BadInput(f"The server at {url} refused the request (HTTP {exc.status}): pass "
                           "its key with --api-key or THRIFTY_API_KEY.") from None
        raise BadInput(f"Cannot benchmark {url}: {exc}") from None
    if not served:
        raise BadInput(f"The server at {url} lists no models on /v1/models.")
    names = [m["id"] for m in served]
    base = served_model or next((m["id"] for m in served if not m.get("parent")), names[0])
    if served_model and served_model not in names:
        raise BadInput(f"--served-model {served_model!r} is not served at {url}; it serves "
                       f"{', '.join(names)}.")
    entry = next(m for m in served if m["id"] == base) if base in names else {}
    info = _thrifty_info(client)
    return runner.Target(url=client.url + "/v1", base_model=base, api_key=api_key,
                         max_model_len=entry.get("max_model_len"),
                         model_path=_local_dir(info.get("base_path")),
                         served=[base] + [n for n in names if n != base],
                         loadable=_folder_names(_local_dir(info.get("adapters_dir"))))


def _thrifty_info(client: ServerClient) -> dict:
    """What a `thrifty serve` server reports about itself ({} for other servers)."""
    try:
        return client.thrifty_info() or {}
    except ServerError:
        return {}


def _local_dir(path: str | None) -> str | None:
    """A folder the server named, when it is on this machine too: the served model's (its
    tokenizer cuts the synthetic prompts) or the adapters folder (loadable on first use)."""
    return path if path and Path(path).is_dir() else None


def _folder_names(folder: str | None) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir()) if folder else []


def check_mix(mix: dict | None, target: runner.Target) -> None:
    if mix:
        workload.check_mix_served(mix, target.served, target.loadable, target.url)


class ServeProcess:
    """`thrifty serve` as a child process for the run. The benchmark talks to the serve part
    through its command line and its readiness line, not its Python objects.

    The server demands `api_key` (None: no key), handed over as THRIFTY_API_KEY, never on the
    command line; the benchmark's requests carry the same key. A THRIFTY_API_KEY in the
    environment is the benchmark's --api-key, so it reaches the server that way too."""

    def __init__(self, args: list[str], workdir: Path, api_key: str | None = None):
        self.args = args
        self.api_key = api_key
        self.log_path = workdir / "logs" / "thrifty-serve.log"
        # the server's own run record goes inside the benchmark's run folder
        self.env = {**os.environ, "THRIFTY_RUNS": str(workdir / "server")}
        self.env.pop("THRIFTY_API_KEY", None)
        if api_key:
            self.env["THRIFTY_API_KEY"] = api_key
        self.proc: subprocess.Popen | None = None

    def start(self) -> dict:
        """Start it and wait for its readiness line (the JSON `thrifty serve --json` prints)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "thrifty", "serve", *self.args, "--json"],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                env=self.env, **processes.spawn_options())
        try:
            line = self.proc.stdout.readline()
        except BaseException:
            self.stop()
            raise
        if not line.strip():
            self.proc.wait()
            raise ServeFailed("`thrifty serve` could not start the model for the benchmark: "
                              f"{_error_paragraph(self.log_path)} (log: {self.log_path})")
        return json.loads(line)

    def target(self, ready: dict) -> runner.Target:
        """The server its readiness line describes, connected with the key it demands."""
        target = connect(ready["url"], self.api_key, None)
        target.started_by_thrifty = True
        target.server_pid = ready["server_pid"]
        target.flags = {k: v for k, v in ready["flags"].items() if k != "reasons"}
        target.startup_memory = parse_startup_log(Path(ready["log"]).read_text(errors="replace"))
        target.gpu_placement = GpuPlacement(
            on_gpu=hardware.accelerator() == "cuda",
            visible_devices=self.env.get("CUDA_VISIBLE_DEVICES"),
            tensor_parallel=int(target.flags.get("tensor_parallel_size") or 1))
        return target

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it stops vLLM's whole process group
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                processes.stop_process_group(self.proc, grace_s=5.0)


class ServeFailed(ThriftyError):
    """The server for a `--model` run did not start (its own error is quoted)."""


def _error_paragraph(log: Path) -> str:
    """thrifty serve's one-paragraph error (from "Error:" on), else its log's last lines."""
    text = log.read_text(errors="replace")
    start = text.rfind("Error:")
    return (text[start + len("Error:"):] if start >= 0 else tail(log, 15)).strip()


def start_server(model: str, adapter_specs: tuple[str, ...], adapters_dir: str | None,
                 dtype: str, max_model_len: int, workdir: Path, api_key: str | None = None):
    """Serve MODEL (with adapters) for the run, demanding `api_key` when given; returns the
    process and the target."""
    args = [model, "--port", "0", "--dtype", dtype, "--max-model-len", str(max_model_len)]
    for spec in adapter_specs:
        args += ["--adapter", spec]
    if adapters_dir:
        args += ["--adapters-dir", adapters_dir]
    process = ServeProcess(args, workdir, api_key)
    with stderr.status(f"starting vLLM with {model} (thrifty serve)"):
        ready = process.start()
    try:
        return process, process.target(ready)
    except BaseException:
        process.stop()
        raise
