"""The server under test: connect to a running one (`--url`), or start one in the vllm engine
for the run (`--model`) and read its start-up memory report."""

from pathlib import Path

from thrifty.benchmark import run as runner
from thrifty.benchmark import workload
from thrifty.benchmark.memory import parse_startup_log
from thrifty.core import hardware, prepare
from thrifty.core.errors import BadInput
from thrifty.core.execute import ensure_engine
from thrifty.core.openai_client import ServerClient, ServerError
from thrifty.core.progress import stderr


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
    return runner.Target(url=client.url + "/v1", base_model=base, api_key=api_key,
                         max_model_len=entry.get("max_model_len"),
                         model_path=_local_model_path(client))


def _local_model_path(client: ServerClient) -> str | None:
    """The served model's folder when `thrifty serve` runs it from this machine (its tokenizer
    then cuts the synthetic prompts)."""
    try:
        info = client.thrifty_info() or {}
    except ServerError:
        return None
    path = info.get("base_path")
    return path if path and Path(path).is_dir() else None


def served_adapters(target: runner.Target) -> tuple[list[str], list[str]]:
    """Names the server lists, and adapters it can load on first use (thrifty serve's
    adapters folder, when it is on this machine)."""
    client = ServerClient(target.url, target.api_key, timeout_s=10.0)
    served = [m["id"] for m in client.models()]
    info = client.thrifty_info() or {}
    folder = Path(info["adapters_dir"]) if info.get("adapters_dir") else None
    loadable = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder and \
        folder.is_dir() else []
    return [target.base_model] + [n for n in served if n != target.base_model], loadable


def check_mix(mix: dict | None, target: runner.Target) -> None:
    if mix:
        served, loadable = served_adapters(target)
        workload.check_mix_served(mix, served, loadable, target.url)


def start_server(model, adapter_specs, adapters_dir, dtype, max_model_len, workdir):
    from thrifty.serve import server  # serve's process management, shared through its API

    specs = server.parse_adapter_specs(adapter_specs)
    ref = prepare.ensure_model(model)
    plan = server.make_plan(ref, specs, adapters_dir, [], "127.0.0.1", 0, api_key=None,
                            dtype=dtype, max_model_len=max_model_len,
                            eager=not hardware.gpus(), tensor_parallel_size=1,
                            max_lora_rank=None, max_loras=None)
    plan.port = server.free_port("127.0.0.1", 0)
    process = server.ServerProcess(plan, ensure_engine("vllm"), workdir)
    process.start()
    try:
        with stderr.status(f"starting vLLM with {plan.base_label}") as status:
            process.wait_ready(on_wait=lambda s: status.update(
                f"starting vLLM with {plan.base_label} ({s:.0f} s)"))
    except BaseException:
        process.stop()
        raise
    target = connect(plan.url, None, None)
    target.started_by_thrifty = True
    target.server_pid = process.proc.pid
    target.flags = {k: v for k, v in plan.summary().items() if k != "reasons"}
    target.startup_memory = parse_startup_log(process.log_path.read_text(errors="replace"))
    return process, target
