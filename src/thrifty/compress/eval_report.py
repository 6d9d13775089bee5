"""What `thrifty eval` shows: short model labels, the perplexity table and the table of each
model's distance from the first, sized for an 80-column terminal (full paths go to a footnote).
"""

import textwrap
from pathlib import Path

import click

from thrifty.core.errors import BadInput
from thrifty.core.numbers import mib
from thrifty.core.output import table


def short_labels(refs: list, given: tuple[str, ...] = (), suffixes: list[str] | None = None
                 ) -> list[str]:
    """A short, distinct label per model: --label when given, else the built-in or hub name's
    last part or the folder's name (+ its suffix: "+adapter"); folders of the same name get
    their parent's name too."""
    if given:
        if len(given) != len(refs):
            raise BadInput(f"--label was given {len(given)} times for {len(refs)} models: give "
                           "one label per model, in the order of the models, or none.")
        if len(set(given)) != len(given):
            raise BadInput("The --label values must differ from each other.")
        return list(given)
    suffixes = suffixes or [""] * len(refs)
    own = [_own_name(ref) + suffix for ref, suffix in zip(refs, suffixes, strict=True)]
    labels = [_longer_name(ref) + suffix if own.count(name) > 1 else name
              for ref, name, suffix in zip(refs, own, suffixes, strict=True)]
    seen: dict[str, int] = {}
    numbered = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        numbered.append(f"{label}#{seen[label]}" if labels.count(label) > 1 else label)
    return numbered


def _longer_name(ref) -> str:
    """The name with what comes before it: the parent folder, or a hub id's organisation."""
    if ref.kind == "local":
        return f"{Path(ref.path).parent.name}/{Path(ref.path).name}"
    return ref.name


def _own_name(ref) -> str:
    if ref.kind == "local":
        return Path(ref.path).name
    return ref.name.rsplit("/", 1)[-1]


def with_deltas(rows: list[dict]) -> list[dict]:
    base = rows[0]
    out = []
    for row in rows:
        size_delta = (100 * (row["weights_bytes"] / base["weights_bytes"] - 1)
                      if row["weights_bytes"] and base["weights_bytes"] else None)
        out.append({**row,
                    "perplexity_delta_pct": 100 * (row["perplexity"] / base["perplexity"] - 1),
                    "weights_delta_pct": size_delta})
    return out


def print_tables(rows: list[dict], corpus: str, window: int, stride: int | None) -> None:
    first = rows[0]
    prefix = "none" if not first["prefix_ids"] else f"ids {first['prefix_ids']}"
    table(f"Perplexity on {corpus}: {first['scored_tokens']:,} tokens scored, window {window}"
          + (f", stride {stride}" if stride else "") + f", prefix {prefix}",
          ["model", "perplexity (95% CI)", "Δ ppl", "weights", "Δ size", "time"],
          [[r["label"], _with_interval(r["perplexity"], r["perplexity_ci95"], "{:.2f}"),
            _signed_pct(r["perplexity_delta_pct"])
            if index and not r.get("vs_base_refused") else "",
            mib(r["weights_bytes"]), _signed_pct(r["weights_delta_pct"]) if index else "",
            f"{r['eval_s']:.0f} s"] for index, r in enumerate(rows)])
    compared = [r for r in rows[1:] if r.get("vs_base")]
    if compared:
        table(f"Against {first['label']}: next-token distributions on the same tokens",
              ["model", "KLD mean", "p90", "p99", "top-1 same", "Δ log-ppl"],
              [_comparison_cells(r) for r in compared])
        _note(f"± is half the 95% interval ({compared[0]['vs_base']['interval']}; --json has "
              "both ends, and the intervals of p90 and p99); ≈ marks a Δ log-ppl whose "
              "interval covers 0 (within noise).")
    for row in rows[1:]:
        if row.get("vs_base_refused"):
            _note(f"No KL divergence for {row['label']}: {row['vs_base_refused']}; its "
                  "perplexity is over its own tokens and not directly comparable.")
    click.echo("Models:")
    for row in rows:
        click.echo(f"  {row['label']} = {row['path']}")


def _note(text: str) -> None:
    click.echo(textwrap.fill(text, width=80, subsequent_indent="  "))


def _comparison_cells(row: dict) -> list[str]:
    vs = row["vs_base"]
    delta = _plus_minus(vs["delta_log_ppl"], vs["delta_log_ppl_ci95"], "{:+.3f}")
    return [row["label"], _plus_minus(vs["kld_mean"], vs["kld_mean_ci95"], "{:.3f}"),
            f"{vs['kld_p90']:.2f}", f"{vs['kld_p99']:.2f}",
            _plus_minus(vs["top1_agreement_pct"], vs["top1_agreement_pct_ci95"], "{:.1f}%"),
            delta + (" ≈" if vs["delta_log_ppl_within_noise"] else "")]


def _plus_minus(value: float, interval: list[float] | None, spec: str) -> str:
    if interval is None:
        return spec.format(value)
    half = (interval[1] - interval[0]) / 2
    return f"{spec.format(value)} ±{spec.format(half).lstrip('+').rstrip('%')}"


def _with_interval(value: float, interval: list[float] | None, spec: str) -> str:
    if interval is None:
        return spec.format(value)
    return f"{spec.format(value)} ({spec.format(interval[0])}–{spec.format(interval[1])})"


def _signed_pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"
