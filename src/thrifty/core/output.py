"""Terminal output: rich tables for people, one JSON document on stdout for scripts."""

import json

import click
from rich.console import Console
from rich.table import Table

stdout = Console()


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    stdout.print(t)


class DefaultSubcommandGroup(click.Group):
    """A group whose default subcommand may be left out: with default_command="run",
    `thrifty bench --url ...` means `thrifty bench run --url ...`."""

    def __init__(self, *args, default_command: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def json_option(function):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout instead of tables.")(function)
