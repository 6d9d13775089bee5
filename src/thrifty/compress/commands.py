"""`thrifty eval`: what compression cost in quality (perplexity) and what it saved (size)."""

import click

from thrifty.assets import prepare
from thrifty.core import tasks
from thrifty.core.execute import run_in_engine
from thrifty.core.numbers import mib
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.runs import RunRecord


@click.command("eval")
@click.argument("model_refs", metavar="MODEL [MODEL]...", nargs=-1, required=True)
@click.option("--corpus", default="enwiki", show_default=True,
              help="`enwiki` (its evaluation split) or a .txt / .jsonl file.")
@click.option("--max-tokens", default=8192, show_default=True, type=click.IntRange(min=16),
              help="Evaluate on the first N tokens of the corpus.")
@click.option("--window", default=1024, show_default=True, type=click.IntRange(min=8),
              help="Tokens per forward pass (sliding window).")
@click.option("--stride", type=click.IntRange(min=1),
              help="Tokens the window moves each step [default: --window, i.e. non-overlapping "
                   "windows as in the GPTQ and AWQ papers]. A smaller stride slides the window and "
                   "gives each scored token window - stride tokens of extra context (lower "
                   "perplexity, slower).")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle (.bin) weights.")
@json_option
def eval_command(model_refs: tuple[str, ...], corpus: str, max_tokens: int, window: int,
                 stride: int | None, allow_pickle: bool, as_json: bool) -> None:
    """Perplexity and weights size of each MODEL on the same evaluation tokens.

    The first MODEL is the reference: the table shows the others' change against it.
    Runs in the compress engine; deterministic (the same inputs give the same numbers).
    """
    stride = stride or window
    if stride > window:
        raise click.BadParameter("must not exceed --window", param_hint="--stride")
    refs = [prepare.ensure_model(m, allow_pickle=allow_pickle) for m in model_refs]
    corpus_path = prepare.ensure_corpus(corpus, "evaluation")
    config = {"models": [r.__dict__ for r in refs], "corpus": corpus,
              "corpus_path": str(corpus_path), "max_tokens": max_tokens, "window": window,
              "stride": stride}
    with RunRecord("eval", config, engines_used=("compress",)) as run:
        result = run_in_engine(
            tasks.EVALUATE,
            {"models": [{"name": r.name, "path": r.path} for r in refs],
             "corpus_path": str(corpus_path), "max_tokens": max_tokens, "window": window,
             "stride": stride},
            run.path, title="evaluating perplexity")
        rows = _with_deltas(result["rows"])
        first = rows[0]
        run.record({"perplexity": first["perplexity"], "eval_tokens": first["eval_tokens"],
                    "weights_bytes": first["weights_bytes"] or 0, "eval_s": first["eval_s"]},
                   details={"rows": rows})
    if as_json:
        emit_json({"run": str(run.path), "rows": rows})
        return
    table(f"Perplexity on {corpus} ({first['eval_tokens']} tokens, window {window}, "
          f"stride {stride})",
          ["model", "perplexity", "Δ ppl", "weights", "Δ size", "bytes/param", "eval time"],
          [[r["model"], f"{r['perplexity']:.3f}", _signed_pct(r["perplexity_delta_pct"]),
            mib(r["weights_bytes"]), _signed_pct(r["weights_delta_pct"]),
            f"{r['bytes_per_param']:.3f}" if r["bytes_per_param"] else "", f"{r['eval_s']} s"]
           for r in rows])
    if len({r["tokens_sha256"] for r in rows}) > 1:
        click.echo("Note: the models tokenize the corpus differently, so their perplexities "
                   "are over different tokens and not directly comparable.")
    click.echo(f"Run record: {run.path}")


def _with_deltas(rows: list[dict]) -> list[dict]:
    base = rows[0]
    out = []
    for row in rows:
        size_delta = (100 * (row["weights_bytes"] / base["weights_bytes"] - 1)
                      if row["weights_bytes"] and base["weights_bytes"] else None)
        out.append({**row,
                    "perplexity_delta_pct": 100 * (row["perplexity"] / base["perplexity"] - 1),
                    "weights_delta_pct": size_delta})
    return out


def _signed_pct(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"
