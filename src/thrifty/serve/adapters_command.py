"""`thrifty adapters`: inspect LoRA adapters, manage them on a running server, make demo ones."""

from pathlib import Path

import click

from thrifty.assets import prepare
from thrifty.core import tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import atomic_folder, check_output_free, write_json
from thrifty.core.numbers import mib
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.runs import RunRecord
from thrifty.formats import lora_adapter as adapters
from thrifty.formats import quantize_manifest
from thrifty.formats.openai_api import ServerClient, ServerError
from thrifty.serve import demo_adapters

DEFAULT_SERVER = "http://127.0.0.1:8000"


def server_options(function):
    function = click.option("--api-key", envvar="THRIFTY_API_KEY",
                            help="Bearer token, if the server requires one (or THRIFTY_API_KEY)."
                            )(function)
    return click.option("--server", envvar="THRIFTY_SERVER", default=DEFAULT_SERVER,
                        show_default=True,
                        help="The server's base URL (or set THRIFTY_SERVER).")(function)


@click.group(name="adapters")
def adapters_group() -> None:
    """LoRA adapters: inspect them, hot-load and unload them on a running server, train the
    demo ones, merge one into its base."""


@adapters_group.command("list")
@server_options
@json_option
def adapters_list(server: str, api_key: str | None, as_json: bool) -> None:
    """Models a running server serves (base and adapters), and the adapters its folder holds."""
    client = ServerClient(server, api_key)
    models = _relay(client.models)
    info = _relay(client.thrifty_info)
    loaded = {m["id"] for m in models}
    folder = (info or {}).get("folder_adapters", {})
    if as_json:
        emit_json({"server": server, "models": models, "thrifty": info})
        return
    rows = [[m["id"], "adapter" if m.get("parent") else "base", "loaded", m.get("root")]
            for m in models]
    rows += [[name, "adapter", "in folder, loads on first request" if not entry["problem"]
              else f"refused: {entry['problem']}", entry["path"]]
             for name, entry in folder.items() if name not in loaded]
    table(f"Models at {server}", ["name", "kind", "state", "path"], rows)
    if info and info.get("lora"):
        click.echo(f"max LoRA rank {info['max_lora_rank']}, {info['max_loras']} adapter(s) per "
                   f"batch; run-time loads allowed from: "
                   f"{', '.join(info['allowed_dirs']) or 'nowhere'}")


@adapters_group.command("load")
@click.argument("name")
@click.argument("path", type=click.Path())
@server_options
def adapters_load(name: str, path: str, server: str, api_key: str | None) -> None:
    """Hot-load the adapter at PATH into a running server as model NAME.

    PATH is read by the server, so it must be a path on the server's machine, inside a folder
    the server allows (`thrifty serve --adapters-dir / --allow-adapters-from`). The server
    checks the adapter against its base model and its rank limit first.
    """
    adapters.check_name(name)
    local = Path(path).expanduser()
    if local.exists():
        path = str(local.resolve())  # the server resolves relative paths from its own folder
    message = _relay(ServerClient(server, api_key).load_adapter, name, path,
                     refused=f"The server at {server} refused to load adapter {name!r}")
    click.echo(message.strip() or f"Loaded {name}.")


@adapters_group.command("unload")
@click.argument("name")
@server_options
def adapters_unload(name: str, server: str, api_key: str | None) -> None:
    """Stop serving adapter NAME on a running server (requests for it then get 404)."""
    client = ServerClient(server, api_key)
    try:
        message = client.unload_adapter(name)
    except ServerError as exc:
        if exc.status != 404:
            raise
        loaded = [m["id"] for m in _relay(client.models) if m.get("parent")]
        raise BadInput(f"No adapter named {name!r} is loaded on {server} (loaded adapters: "
                       f"{', '.join(loaded) or 'none'}); nothing was unloaded.") from None
    click.echo(message.strip() or f"Unloaded {name}.")


@adapters_group.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--base", help="Also check that the adapter fits this model (built-in name or "
              "local folder).")
@json_option
def adapters_inspect(path: str, base: str | None, as_json: bool) -> None:
    """Show what the adapter at PATH holds (rank, modules, size), and whether it fits --base."""
    info = adapters.inspect(path)
    fits = None
    if base:
        ref = prepare.ensure_model(base)
        adapters.check_fits_base(info, ref.path, base)
        fits = base
    if as_json:
        emit_json({**info.to_dict(), "fits_base": fits,
                   "vllm_max_lora_rank": adapters.vllm_max_rank(info.rank)})
        return
    table(f"Adapter {info.path}", ["field", "value"], [
        ["rank (largest)", info.rank], ["alpha", info.alpha],
        ["target modules", ", ".join(info.target_modules)],
        ["modules changed", info.modules_count], ["weights", mib(info.size_bytes)],
        ["trained on", info.trained_on],
        ["vLLM --max-lora-rank", adapters.vllm_max_rank(info.rank)],
        ["fits", f"yes, {fits}" if fits else "(no --base given)"]])


@adapters_group.command("demo")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder to write the adapters to (one sub-folder each). Default: "
                   "<thrifty home>/adapters/demo.")
@click.option("--name", "names", multiple=True,
              type=click.Choice(sorted(demo_adapters.specs())),
              help="Train only this demo adapter; repeat for several.")
@click.option("--steps", type=click.IntRange(min=1),
              help=f"Training steps per adapter (default {demo_adapters.TRAINING['steps']}).")
@click.option("--force", is_flag=True, help="Train again even if the adapter exists.")
@json_option
def adapters_demo(out: str | None, names: tuple[str, ...], steps: int | None, force: bool,
                  as_json: bool) -> None:
    """Train small demo LoRA adapters on the default model (a minute or two on a CPU).

    Each learns from its own topical slice of the enwiki corpus, so its completions visibly
    differ from the base model's. Adapters already trained are reused unless --force.
    """
    manifests = demo_adapters.train(Path(out) if out else None, list(names) or None, force, steps)
    if as_json:
        emit_json(manifests)
        return
    table("Demo adapters", ["name", "trained on", "loss first -> last", "train s", "path"],
          [[m["name"], ", ".join(m["trained_on_titles"]),
            f"{m['loss_first']:.2f} -> {m['loss_last']:.2f}", m["train_s"], m["path"]]
           for m in manifests])


@adapters_group.command("merge")
@click.argument("base")
@click.argument("adapter", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write the merged model to (must not exist without --force).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@json_option
def adapters_merge(base: str, adapter: str, out: str, force: bool, as_json: bool) -> None:
    """Fold ADAPTER into a copy of BASE and save it as a plain model.

    A merged model serves its one adapter at the base model's speed (no LoRA computation),
    so it suits an adapter that takes most of the traffic. BASE must be an unquantized model;
    to serve a quantized merged model, quantize the merged output.
    """
    out_dir = Path(out).expanduser().resolve()
    check_output_free(out_dir, force)
    ref = prepare.ensure_model(base)
    if quantize_manifest.is_quantized(ref.path):
        raise BadInput(f"{base} is a quantized checkpoint; merge into the unquantized model it "
                       "came from, then quantize the merged model.")
    info = adapters.validate(adapter, ref.path, base)
    with RunRecord("adapters-merge", {"base": ref.path, "adapter": info.path,
                                      "out": str(out_dir)}, engines_used=("compress",)) as run:
        with atomic_folder(out_dir, force=force) as tmp:
            result = run_in_engine(tasks.MERGE_ADAPTER,
                                   {"base_path": ref.path, "adapter_path": info.path,
                                    "out_dir": str(tmp)}, run.path,
                                   title=f"merging {Path(info.path).name} into {base}")
            write_json(tmp / "thrifty-merge.json", {"base_model": ref.path,
                                                    "adapter": info.to_dict(), **result})
        run.record({"parameters_params": result["parameters_params"]})
    if as_json:
        emit_json({"out": str(out_dir), "run": str(run.path), **result})
        return
    click.echo(f"Merged {info.path} into {base}: {out_dir}")


def _relay(call, *args, refused: str | None = None):
    """Call the server; turn its refusals into one-paragraph user errors."""
    try:
        return call(*args)
    except ServerError as exc:
        if refused and exc.status in (400, 403, 404, 500):
            raise BadInput(f"{refused}: {_reason(str(exc))}") from None
        raise


def _reason(message: str) -> str:
    return message.split(": ", 1)[1] if message.startswith("POST ") else message
