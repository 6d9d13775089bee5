"""The `thrifty` command: a Click group whose subcommands are imported only when used.

`thrifty --help` imports no torch, transformers or vLLM: heavy work runs in engine
environments, and each command module is imported only when that command runs (or when
`--help` needs its one-line summary; command modules themselves import nothing heavy).
"""

import difflib
import importlib
import os
import sys

import click

from thrifty import __version__
from thrifty.core import processes, tracking
from thrifty.core.errors import ThriftyError

# name -> "module:attribute". The only list of commands; `--help` and dispatch both read it.
COMMANDS = {
    "setup": "thrifty.assets.commands:setup",
    "doctor": "thrifty.assets.commands:doctor",
    "models": "thrifty.assets.commands:models_group",
    "corpora": "thrifty.assets.commands:corpora_group",
    "generate": "thrifty.serve.commands:generate",
    "serve": "thrifty.serve.serve_command:serve",
    "adapters": "thrifty.serve.adapters_command:adapters_group",
    "bench": "thrifty.benchmark.bench_command:bench_group",
    "gpus": "thrifty.cost.commands:gpus_command",
    "fit": "thrifty.cost.commands:fit_command",
    "cost": "thrifty.cost.commands:cost_group",
    "eval": "thrifty.compress.commands:eval_command",
    "quantize": "thrifty.compress.quantize_command:quantize",
    "distill": "thrifty.distill.command:distill",
    "plan": "thrifty.plan.command:plan",
    "deploy": "thrifty.plan.deploy_command:deploy_group",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module on first use, and suggests near misses."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module_name, attribute = self.lazy_commands[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} Run `thrifty --help` to see the commands.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ThriftyError as exc:
            if debug_enabled(ctx):
                raise
            _print_error(str(exc))
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if debug_enabled(ctx):
                raise
            _print_error(f"Unexpected {type(exc).__name__}: {exc}. This is a bug in thrifty, "
                         "not in your input; rerun with --debug for the traceback and report it.")
            ctx.exit(1)


def debug_enabled(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get("THRIFTY_DEBUG") == "1"


def _print_error(message: str) -> None:
    click.secho("Error: ", fg="red", bold=True, err=True, nl=False)
    click.echo(message, err=True)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-paragraph errors.")
@click.option("--mlflow", "mlflow_uri", metavar="URI",
              help="Log every run to this MLflow tracking server (or THRIFTY_MLFLOW_URI); "
                   "needs `pip install 'thrifty[mlflow]'`.")
@click.version_option(__version__, prog_name="thrifty")
def cli(debug: bool, mlflow_uri: str | None) -> None:
    """thrifty: make a fine-tuned LLM cheap to deploy.

    Quantize and evaluate a model, generate with it in vLLM, and keep a record of every run.
    Heavy libraries run in isolated engine environments (`thrifty setup`); everything works
    offline with the built-in model `smollm2-135m` and the `enwiki` corpus.
    """
    if mlflow_uri:  # the environment carries it to the commands a plan runs
        os.environ[tracking.URI_ENV] = mlflow_uri
    if tracking.tracking_uri():
        tracking.check_client()


def main() -> None:
    processes.exit_on_termination()  # SIGTERM/SIGHUP clean up as Ctrl-C does
    try:
        cli(prog_name="thrifty")
    except SystemExit as exc:
        # a command that was stopped by a signal, and did not end cleanly, exits 128 + signal;
        # one that stops by design on SIGTERM (thrifty serve) keeps its 0
        if processes.received and exc.code not in (0, None):
            raise SystemExit(processes.exit_code(1)) from None
        raise exc


if __name__ == "__main__":
    sys.exit(main())
