"""`thrifty eval`: what compression cost in quality (perplexity, KL divergence and top-1
agreement against the base) and what it saved (size)."""

from pathlib import Path

import click

from thrifty.assets import prepare
from thrifty.compress import eval_report, task_accuracy
from thrifty.core import tasks
from thrifty.core.execute import run_in_engine
from thrifty.core.output import emit_json, json_option
from thrifty.core.runs import RunRecord
from thrifty.formats import lora_adapter as adapters


@click.command("eval")
@click.argument("model_refs", metavar="BASE[+ADAPTER] [CANDIDATE[+ADAPTER]]...", nargs=-1,
                required=True)
@click.option("--corpus", default="enwiki", show_default=True,
              help="`enwiki` (its evaluation split) or a .txt / .jsonl file.")
@click.option("--max-tokens", default=8192, show_default=True, type=click.IntRange(min=16),
              help="Evaluate on the first N tokens of the corpus.")
@click.option("--window", default=1024, show_default=True, type=click.IntRange(min=8),
              help="Tokens per forward pass, the model's prefix (BOS) included.")
@click.option("--stride", type=click.IntRange(min=1),
              help="New tokens scored per window after the first [default: as many as fit, each "
                   "window with one token of context, as lm-evaluation-harness's rolling "
                   "log-likelihood]. A smaller stride slides the window: every scored token "
                   "gets window - stride tokens of context (lower perplexity, slower).")
@click.option("--label", "labels", multiple=True,
              help="A short name per model, in order (repeat it); default: the folder's name.")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle (.bin) weights.")
@task_accuracy.task_option
@json_option
def eval_command(model_refs: tuple[str, ...], corpus: str, max_tokens: int, window: int,
                 stride: int | None, labels: tuple[str, ...], allow_pickle: bool,
                 task_specs: tuple, as_json: bool) -> None:
    """Perplexity and size of each model, and how far each CANDIDATE is from BASE.

    Every model scores the same evaluation tokens. Each window starts with the model's prefix
    token (its tokenizer's BOS where it adds one, as in every request a server sees; nothing
    where it adds none, e.g. SmolLM2). Against BASE, each candidate gets the mean KL divergence
    of its next-token distribution from BASE's (with p90/p99), the share of tokens whose most
    likely next token is the same, and the change in log-perplexity, each with a 95% interval.
    With --task, each model also answers a task through lm-evaluation-harness (accuracy with
    its standard error, and each candidate's recovery against BASE).

    MODEL+ADAPTER applies a LoRA adapter folder over MODEL, unmerged, as `thrifty serve` does:
    compare `base+adapter` with `quantized-base+adapter` and a merged-then-quantized model on
    the adapter's own data (--corpus) to see what serving it over a quantized base costs.
    Runs in the compress engine; deterministic (the same inputs give the same numbers).
    """
    if stride and stride > window:
        raise click.BadParameter("must not exceed --window", param_hint="--stride")
    specs = [_split_adapter(m) for m in model_refs]
    refs = [prepare.ensure_model(m, allow_pickle=allow_pickle) for m, _ in specs]
    adapter_paths = [adapters.validate(a, ref.path, m).path if a else None
                     for (m, a), ref in zip(specs, refs, strict=True)]
    names = eval_report.short_labels(refs, labels,
                                     [f"+{Path(a).name}" if a else "" for a in adapter_paths])
    corpus_path = prepare.ensure_corpus(corpus, "evaluation")
    config = {"models": [r.__dict__ for r in refs], "adapters": adapter_paths,
              "labels": names, "corpus": corpus,
              "corpus_path": str(corpus_path), "max_tokens": max_tokens, "window": window,
              "stride": stride, "tasks": [spec.label for spec in task_specs]}
    models = [{"name": name, "path": r.path, "adapter_path": a}
              for name, r, a in zip(names, refs, adapter_paths, strict=True)]
    with RunRecord("eval", config, engines_used=("compress",)) as run:
        result = run_in_engine(
            tasks.EVALUATE,
            {"models": models, "corpus_path": str(corpus_path), "max_tokens": max_tokens,
             "window": window, "stride": stride, "work_dir": str(run.path)},
            run.path, title="evaluating")
        rows = [{**row, "label": row["model"]} for row in eval_report.with_deltas(result["rows"])]
        task_rows = (task_accuracy.run_task_accuracy(task_specs, models, run.path)
                     if task_specs else [])
        run.record(_measured(rows), details={"rows": rows, "task_rows": task_rows})
    if as_json:
        emit_json({"run": str(run.path), "rows": rows, "task_rows": task_rows})
        return
    eval_report.print_tables(rows, corpus, window, stride)
    if task_rows:
        task_accuracy.print_task_table(task_rows)
    click.echo(f"Run record: {run.path}")


def _split_adapter(spec: str) -> tuple[str, str | None]:
    """MODEL+ADAPTER -> (MODEL, ADAPTER); a model with no '+ADAPTER' part (or whose own path
    holds a '+') -> (MODEL, None)."""
    if "+" not in spec or Path(spec).expanduser().exists():
        return spec, None
    model, adapter = spec.rsplit("+", 1)
    return model, adapter


def _measured(rows: list[dict]) -> dict:
    first = rows[0]
    measured = {"perplexity": first["perplexity"], "eval_tokens": first["eval_tokens"],
                "weights_bytes": first["weights_bytes"] or 0, "eval_s": first["eval_s"]}
    if len(rows) > 1 and rows[1].get("vs_base"):
        measured |= {"kld_mean_nats": rows[1]["vs_base"]["kld_mean"],
                     "top1_agreement_pct": rows[1]["vs_base"]["top1_agreement_pct"]}
    return measured
