"""What the cost commands share: the --catalog option, name lists, stale-price warnings, shapes."""

import datetime

import click

from thrifty.core.progress import stderr
from thrifty.cost import catalog, model_shape

CATALOG_HELP = ("A TOML file of [[gpu]] / [[price]] tables that adds GPUs or overrides prices "
                "(same format as the shipped catalog; $THRIFTY_HOME/gpus.toml is read too).")


def catalog_option(function):
    return click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False),
                        help=CATALOG_HELP)(function)


def split_names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def warn_stale(prices: list[catalog.Price]) -> None:
    """One warning naming every price shown that is more than a year old, with its date."""
    today = datetime.date.today()
    stale = sorted({p for p in prices if p.age_days(today) > catalog.STALE_AFTER_DAYS},
                   key=lambda p: (p.date, p.gpu))
    if not stale:
        return
    listed = "; ".join(f"{p.gpu} {p.provider} {p.kind} ${p.usd_per_gpu_hour:g}/h of "
                       f"{p.date.isoformat()}" for p in stale)
    stderr.print(f"[yellow]warning:[/] {len(stale)} price(s) shown are more than a year old: "
                 f"{listed}. Check them and override them with --catalog.")


def load_shapes(model_refs: tuple[str, ...], variants: list[str] | None) -> list[tuple]:
    """(label, shape) for each model, in each variant asked for (a checkpoint that is already
    quantized is taken as it is)."""
    shapes = []
    for ref in model_refs:
        shape = model_shape.load(ref)
        if shape.weight_bits < 16 or not variants:
            shapes.append((shape.precision, shape))
            continue
        for name in variants:
            shapes.append((name, model_shape.variant(shape, name)))
    return shapes
