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


def json_option(function):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout instead of tables.")(function)


def mib(n_bytes: float | None) -> str:
    return "" if n_bytes is None else f"{n_bytes / 1024**2:.1f} MiB"
