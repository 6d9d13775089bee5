"""`thrifty serve`: vLLM's OpenAI-compatible server over one base model and many LoRA adapters."""

import json
import time

import click

from thrifty.assets import architectures, prepare
from thrifty.core import hardware
from thrifty.core.execute import ensure_engine
from thrifty.core.output import json_option
from thrifty.core.progress import stderr
from thrifty.core.runs import RunRecord
from thrifty.serve import server


@click.command()
@click.argument("base")
@click.option("--adapter", "adapter_specs", multiple=True, metavar="NAME=PATH",
              help="A LoRA adapter to serve as model NAME from the start; repeat for several.")
@click.option("--adapters-dir", type=click.Path(file_okay=False),
              help="A folder of adapters (one sub-folder each): a request for model NAME loads "
                   "DIR/NAME on first use, so adapters dropped in later become servable.")
@click.option("--allow-adapters-from", "allow_from", multiple=True,
              type=click.Path(file_okay=False),
              help="Another folder that `thrifty adapters load` may load adapters from; repeat "
                   "for several. Adapters load at run time only from these and --adapters-dir.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--api-key", envvar="THRIFTY_API_KEY",
              help="Require this bearer token on /v1 requests (or set THRIFTY_API_KEY).")
@click.option("--max-loras", type=click.IntRange(min=1),
              help="Adapters in one batch. Default: one slot per adapter known at start.")
@click.option("--max-lora-rank", type=int,
              help="Largest adapter rank servable. Default: the largest rank present, rounded "
                   "up to a rank vLLM accepts (a larger value wastes memory and time).")
@click.option("--tensor-parallel-size", default=1, show_default=True,
              type=click.IntRange(min=1), help="GPUs to shard the model over.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              default="auto", show_default=True,
              help="Weights and activations type (auto: vLLM's choice; bfloat16 for a float32 "
                   "checkpoint).")
@click.option("--max-model-len", default=2048, show_default=True, type=click.IntRange(min=16),
              help="Longest prompt + completion, in tokens.")
@click.option("--compile/--eager", "compile_model", default=None,
              help="torch.compile the model (default on GPUs; on a CPU it adds a minute or more "
                   "to start-up, so the default there is eager).")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle (.bin) weights in BASE.")
@json_option
def serve(base: str, adapter_specs: tuple[str, ...], adapters_dir: str | None,
          allow_from: tuple[str, ...], host: str, port: int, api_key: str | None,
          max_loras: int | None, max_lora_rank: int | None, tensor_parallel_size: int,
          dtype: str, max_model_len: int, compile_model: bool | None, allow_pickle: bool,
          as_json: bool) -> None:
    """Serve BASE and LoRA adapters with vLLM's OpenAI-compatible API until Ctrl-C.

    BASE is a built-in name, a local folder (a thrifty-quantized checkpoint works) or a hub
    id. Every adapter is checked first: safetensors LoRA weights, shapes that fit BASE.
    vLLM's LoRA flags are derived from the adapters (exact max rank, one batch slot per
    adapter). Requests name an adapter as their `model`. Manage adapters while it runs with
    `thrifty adapters list|load|unload`. With --json, one line describing the running server
    is printed on stdout once it is ready.
    """
    specs = server.parse_adapter_specs(adapter_specs)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        stderr.print(f"[yellow]Warning:[/yellow] listening on {host} without --api-key: anyone "
                     "who can reach this machine can query the model and hot-load adapters "
                     "from the allowed folders.")
    ref = prepare.ensure_model(base, allow_pickle=allow_pickle)
    architectures.check_vllm_serves(ref, "serves the base model with vLLM")
    eager = not compile_model if compile_model is not None else not hardware.gpus()
    plan = server.make_plan(ref, specs, adapters_dir, list(allow_from), host, port,
                            api_key=api_key, dtype=dtype, max_model_len=max_model_len,
                            eager=eager, tensor_parallel_size=tensor_parallel_size,
                            max_lora_rank=max_lora_rank, max_loras=max_loras)
    for name, reason in plan.folder_rejected.items():
        stderr.print(f"[yellow]Not serving {name} from the adapters folder:[/yellow] {reason}")
    plan.port = server.free_port(host, port)
    python = ensure_engine("vllm")
    config = {k: v for k, v in plan.summary().items() if k != "reasons"}
    with RunRecord("serve", config, engines_used=("vllm",)) as run:
        process = server.ServerProcess(plan, python, run.path)
        try:
            process.start()
            with stderr.status(f"starting vLLM with {plan.base_label}") as status:
                ready_s = process.wait_ready(on_wait=lambda s: status.update(
                    f"starting vLLM with {plan.base_label} ({s:.0f} s)"))
            models = [m["id"] for m in process.client.models()]
            run.record({"startup_s": round(ready_s, 2),
                        "adapters_at_start_count": len(models) - 1},
                       details=plan.summary())
            _announce(plan, models, ready_s, run, process, as_json)
            while process.alive():
                time.sleep(0.5)
            raise process.failure(f"vLLM's server exited with code {process.proc.returncode}")
        except KeyboardInterrupt:
            stderr.print("stopping the server")
        finally:
            process.stop()


def _announce(plan: server.ServePlan, models: list[str], ready_s: float, run: RunRecord,
              process: server.ServerProcess, as_json: bool) -> None:
    adapters = [m for m in models if m != plan.base_label]
    if as_json:
        click.echo(json.dumps({
            "url": plan.url + "/v1", "base": plan.base_label, "adapters": adapters,
            "startup_s": round(ready_s, 2), "server_pid": process.proc.pid,
            "run": str(run.path), "log": str(process.log_path), "flags": plan.summary(),
        }))
        return
    click.echo(f"Serving {plan.base_label} at {plan.url}/v1 (OpenAI-compatible), ready in "
               f"{ready_s:.0f} s.")
    if plan.lora_enabled:
        click.echo(f"  adapters: {', '.join(adapters) or '(none yet)'}")
        for flag in ("max_lora_rank", "max_loras", "max_cpu_loras"):
            click.echo(f"  --{flag.replace('_', '-')} {getattr(plan, flag)}: "
                       f"{plan.reasons[flag]}")
        if plan.adapters_dir:
            click.echo(f"  adapters folder: {plan.adapters_dir} (request model <sub-folder "
                       "name> to load one)")
    else:
        click.echo("  LoRA is off (no adapters, no adapters folder).")
    auth = " -H 'Authorization: Bearer $THRIFTY_API_KEY'" if plan.api_key else ""
    click.echo(f"  log: {process.log_path}\n  Try: curl {plan.url}/v1/completions{auth} -H "
               f"'Content-Type: application/json' -d '{{\"model\": \"{models[-1]}\", "
               f"\"prompt\": \"Hello\", \"max_tokens\": 16}}'\nPress Ctrl-C to stop.")
