"""Plan and run vLLM's OpenAI-compatible server: flags derived from the adapters, a port
check, start-up with readiness, and a shutdown that leaves no process behind."""

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from thrifty.assets.models import ModelRef
from thrifty.core import hardware, jobs, processes
from thrifty.core.errors import BadInput, ThriftyError
from thrifty.core.files import tail, write_json
from thrifty.formats import lora_adapter as adapters
from thrifty.formats import serve_flags
from thrifty.formats.openai_api import ServerClient

HOT_LOAD_HEADROOM = 4  # adapters vLLM keeps in memory beyond the per-batch slots
MAX_DEFAULT_LORA_SLOTS = 16  # per-batch slots thrifty sizes to by default at most
DEFAULT_RUNTIME_RANK = 16  # vLLM's default, when no adapter is known at start
READY_TIMEOUT_S = 900.0


class ServerFailed(ThriftyError):
    """vLLM's server exited or never became ready."""


@dataclass
class ServePlan:
    base: ModelRef
    base_label: str
    host: str
    port: int
    api_key: str | None = None
    dtype: str = "auto"
    max_model_len: int = 2048
    eager: bool = True
    tensor_parallel_size: int = 1
    startup_adapters: dict[str, adapters.AdapterInfo] = field(default_factory=dict)
    adapters_dir: str | None = None
    folder_adapters: dict[str, adapters.AdapterInfo] = field(default_factory=dict)
    folder_rejected: dict[str, str] = field(default_factory=dict)
    allowed_dirs: list[str] = field(default_factory=list)
    max_lora_rank: int | None = None  # None: LoRA off
    max_loras: int | None = None
    max_cpu_loras: int | None = None
    reasons: dict[str, str] = field(default_factory=dict)  # why each derived flag has its value

    @property
    def lora_enabled(self) -> bool:
        return self.max_lora_rank is not None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def vllm_args(self) -> list[str]:
        # The API key goes to vLLM as VLLM_API_KEY (see ServerProcess.start), never as an
        # argument: arguments show in `ps` and in the server's config file.
        args = ["--model", self.base.path, "--served-model-name", self.base_label,
                "--host", self.host, "--port", str(self.port),
                *serve_flags.tuning_args(self.summary())]
        if self.lora_enabled and self.startup_adapters:
            args += ["--lora-modules", *(f"{name}={info.path}"
                                         for name, info in self.startup_adapters.items())]
        return args

    def launcher_config(self) -> dict:
        """What `thrifty.libs.vllm_server` needs: vLLM's arguments, and the summary (from which
        the server takes its adapter policy)."""
        return {"vllm_args": self.vllm_args(), "info": self.summary()}

    def summary(self) -> dict:
        """What the server runs with (also served at /v1/thrifty/info); no secrets."""
        return {
            "base": self.base_label, "base_path": self.base.path, "dtype": self.dtype,
            "max_model_len": self.max_model_len, "eager": self.eager,
            "tensor_parallel_size": self.tensor_parallel_size, "lora": self.lora_enabled,
            "max_lora_rank": self.max_lora_rank, "max_loras": self.max_loras,
            "max_cpu_loras": self.max_cpu_loras, "reasons": self.reasons,
            "startup_adapters": {n: i.to_dict() for n, i in self.startup_adapters.items()},
            "adapters_dir": self.adapters_dir, "allowed_dirs": self.allowed_dirs,
            "api_key_required": bool(self.api_key),
        }


def derive_lora_flags(plan: ServePlan, max_lora_rank: int | None, max_loras: int | None) -> None:
    """Size vLLM's LoRA flags to the adapters known at start (or take the user's values)."""
    known = {**plan.folder_adapters, **plan.startup_adapters}
    runtime_loading = bool(plan.allowed_dirs)
    if not known and not runtime_loading:
        plan.reasons["lora"] = "off: no adapters and no folder to load them from"
        return
    largest = max((info.rank for info in known.values()), default=0)
    if max_lora_rank is not None:
        if max_lora_rank not in adapters.VLLM_RANKS:
            raise BadInput(f"--max-lora-rank {max_lora_rank} is not a value vLLM accepts "
                           f"({', '.join(map(str, adapters.VLLM_RANKS))}).")
        if max_lora_rank < largest:
            names = [n for n, i in known.items() if i.rank == largest]
            raise BadInput(f"--max-lora-rank {max_lora_rank} is below the rank of adapter "
                           f"{names[0]!r} ({largest}); raise it to "
                           f"{adapters.vllm_max_rank(largest)} or leave it out.")
        plan.max_lora_rank = max_lora_rank
        plan.reasons["max_lora_rank"] = "given"
    elif known:
        plan.max_lora_rank = adapters.vllm_max_rank(largest)
        plan.reasons["max_lora_rank"] = (
            f"largest adapter rank {largest}" + (
                "" if plan.max_lora_rank == largest
                else f", rounded up to {plan.max_lora_rank}, the next rank vLLM accepts"))
    else:
        plan.max_lora_rank = DEFAULT_RUNTIME_RANK
        plan.reasons["max_lora_rank"] = (f"no adapter known at start; vLLM's default "
                                         f"{DEFAULT_RUNTIME_RANK}")
    if max_loras is not None:
        plan.max_loras = max_loras
        plan.reasons["max_loras"] = "given"
    else:
        plan.max_loras = max(1, min(len(known), MAX_DEFAULT_LORA_SLOTS))
        plan.reasons["max_loras"] = (
            f"one batch slot per adapter known at start ({len(known)})" if known
            else "one slot, no adapter known at start")
        if len(known) > MAX_DEFAULT_LORA_SLOTS:
            plan.reasons["max_loras"] += f", capped at {MAX_DEFAULT_LORA_SLOTS}"
    plan.max_cpu_loras = max(plan.max_loras, len(known)) + HOT_LOAD_HEADROOM
    plan.reasons["max_cpu_loras"] = (f"every known adapter plus {HOT_LOAD_HEADROOM} hot-loaded "
                                     "ones stay in memory before vLLM evicts the least recent")


def check_tensor_parallel(size: int) -> None:
    gpus = len(hardware.gpus())
    if size > 1 and size > gpus:
        raise BadInput(f"--tensor-parallel-size {size} needs {size} GPUs; this machine has "
                       f"{gpus}. Use a smaller value, or run on a machine with more GPUs.")


def free_port(host: str, port: int) -> int:
    """`port` if nothing listens there (0 picks a free one); otherwise a clear error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BadInput(
                f"Port {port} on {host} is already in use ({exc.strerror}); another server "
                "is probably running there. Pass --port with a free port (0 picks one), or "
                "stop what is using it.") from None
        return probe.getsockname()[1]


class ServerProcess:
    """vLLM's server in the vllm engine, as a process group of its own."""

    def __init__(self, plan: ServePlan, python: str, workdir: Path):
        self.plan = plan
        self.python = python
        self.config_path = Path(workdir) / "server.json"
        self.log_path = Path(workdir) / "logs" / "vllm-server.log"
        self.proc: subprocess.Popen | None = None
        self.client = ServerClient(plan.url, plan.api_key)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, self.plan.launcher_config())
        env = {**os.environ, "PYTHONPATH": jobs.engine_pythonpath(), "PYTHONUNBUFFERED": "1",
               "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; ignored on GPUs
        env.pop("VLLM_API_KEY", None)
        if self.plan.api_key:
            env["VLLM_API_KEY"] = self.plan.api_key
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "thrifty.libs.vllm_server", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                **processes.spawn_options())  # a killed CLI never leaves the server behind

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, on_wait=lambda elapsed: None) -> float:
        """Seconds until the server answered /health and listed its models."""
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if self.proc.poll() is not None:
                raise self.failure(f"vLLM's server exited with code {self.proc.returncode} "
                                   "while starting")
            if self.client.healthy():
                return elapsed
            if elapsed > timeout_s:
                raise self.failure(f"vLLM's server was not ready after {timeout_s:.0f} s")
            on_wait(elapsed)
            time.sleep(0.5)

    def failure(self, what: str) -> ServerFailed:
        cause = jobs.likely_cause(self.log_path)
        return ServerFailed(f"{what}" + (f": {cause}" if cause else "") + ". Full log: "
                            f"{self.log_path}\nLast lines of the log:\n{tail(self.log_path, 20)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop_process_group(self.proc, grace_s=20.0)


def base_label(ref: ModelRef) -> str:
    return ref.name if ref.kind != "local" else Path(ref.path).name


def make_plan(base: ModelRef, adapter_specs: dict[str, str], adapters_dir: str | None,
              allow_from: list[str], host: str, port: int, **options) -> ServePlan:
    """Validate the adapters against the base and derive vLLM's flags from them.

    options: api_key, dtype, max_model_len, eager, tensor_parallel_size, max_lora_rank,
    max_loras (None derives them).
    """
    label = base_label(base)
    max_lora_rank = options.pop("max_lora_rank", None)
    max_loras = options.pop("max_loras", None)
    plan = ServePlan(base=base, base_label=label, host=host, port=port, **options)
    check_tensor_parallel(plan.tensor_parallel_size)
    problems = []
    for name, path in adapter_specs.items():
        if name == label:
            problems.append(f"adapter name {name!r} is the base model's own name")
            continue
        try:
            plan.startup_adapters[name] = adapters.validate(path, base.path, label)
        except adapters.AdapterRejected as exc:
            problems.append(f"adapter {name!r}: {exc}")
    if problems:
        raise adapters.AdapterRejected("Cannot serve these adapters over " + label + ": "
                                       + " ".join(problems))
    if adapters_dir:
        folder = Path(adapters_dir).expanduser().resolve()
        if not folder.is_dir():
            raise BadInput(f"--adapters-dir {folder} is not a folder. Create it (adapters "
                           "dropped into it become servable by their folder name) or fix the "
                           "path.")
        plan.adapters_dir = str(folder)
        plan.allowed_dirs.append(str(folder))
        for name, path in adapters.scan_folder(folder).items():
            try:
                plan.folder_adapters[name] = adapters.validate(path, base.path, label)
            except adapters.AdapterRejected as exc:
                plan.folder_rejected[name] = str(exc)
    for extra in allow_from:
        folder = Path(extra).expanduser().resolve()
        if not folder.is_dir():
            raise BadInput(f"--allow-adapters-from {folder} is not a folder.")
        plan.allowed_dirs.append(str(folder))
    derive_lora_flags(plan, max_lora_rank, max_loras)
    return plan


def parse_adapter_specs(specs: tuple[str, ...]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--adapter {spec!r} is not NAME=PATH (for example "
                           "--adapter support=./adapters/support).")
        adapters.check_name(name)
        if name in parsed:
            raise BadInput(f"--adapter {name!r} is given twice; names must be unique.")
        parsed[name] = path
    return parsed
