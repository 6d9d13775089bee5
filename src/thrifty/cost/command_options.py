"""What the cost commands share: the --catalog option, name lists, stale-price warnings, shapes."""

import datetime
from dataclasses import dataclass

import click

from thrifty.core.progress import stderr
from thrifty.cost import catalog, model_shape
from thrifty.formats import quantize_manifest

CATALOG_HELP = ("A TOML file of [[gpu]] / [[price]] tables that adds GPUs or overrides prices "
                "(same format as the shipped catalog; $THRIFTY_HOME/gpus.toml is read too).")


def catalog_option(function):
    return click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False),
                        help=CATALOG_HELP)(function)


def tensor_parallel_option(function):
    return click.option(
        "--tensor-parallel", "--tensor-parallel-size", "tensor_parallel", type=int,
        metavar="N", help="GPUs per replica (vLLM's --tensor-parallel-size): 1, 2, 4 or 8 within "
        "a node; default: the smallest group that holds the model.")(function)


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


@dataclass(frozen=True)
class Variant:
    """A model as it will be costed: a checkpoint as it is, or a variant modelled from the
    shape of an unquantized one."""
    model: str  # the MODEL reference given
    label: str
    shape: model_shape.ModelShape
    modelled: bool  # a variant modelled from the model's shape, not a checkpoint at hand

    def not_made(self) -> str:
        """Why thrifty cannot produce this variant ('' when it can): a modelled quantized
        variant needs a scheme `thrifty quantize` writes (formats/quantize_manifest.SCHEMES)."""
        precision = self.shape.precision
        if not self.modelled or precision == "bf16" or precision in quantize_manifest.precisions():
            return ""
        made = ", ".join(sorted(quantize_manifest.precisions()))
        return (f"`thrifty quantize` cannot make {precision} yet (it makes {made}); "
                "make it with llm-compressor (a compressed-tensors checkpoint), then cost that "
                "checkpoint")


def load_shapes(model_refs: tuple[str, ...], variants: list[str] | None) -> list[Variant]:
    """Each model, in each variant asked for (a checkpoint that is already quantized is taken as
    it is)."""
    shapes = []
    for ref in model_refs:
        shape = model_shape.load(ref)
        if shape.weight_bits < 16 or not variants:
            shapes.append(Variant(ref, shape.precision, shape, False))
            continue
        for name in variants:
            shapes.append(Variant(ref, name, model_shape.variant(shape, name), True))
    return shapes
