"""The distillation's summary: a terminal table and report.md."""

import math

from thrifty.core.numbers import fixed


def gap_closed_pct(before: float, after: float, teacher: float) -> float | None:
    """Share of the student's loss gap to the teacher that training closed. Measured on the
    log of perplexity (the mean cross-entropy), which a perplexity in the thousands would
    otherwise make look nearly closed after any training at all."""
    if before == teacher:
        return None
    return 100 * (math.log(before) - math.log(after)) / (math.log(before) - math.log(teacher))


def summary(result: dict) -> tuple[str, list[str], list[list[object]]]:
    rows = result["details"].get("eval") or []
    table_rows = []
    for row in rows:
        closed = gap_closed_pct(rows[1]["perplexity"], row["perplexity"], rows[0]["perplexity"])
        vs = row.get("vs_base") or {}
        table_rows.append([row["model"], fixed(row["perplexity"], "{:,.3f}"),
                           fixed(vs.get("kld_mean"), "{:.3f}"),
                           fixed(vs.get("top1_agreement_pct"), "{:.1f}%"),
                           fixed(row["parameters_params"] / 1e6, "{:.1f}M"),
                           fixed(closed, "{:.1f}%")])
    measured = result["measured"]
    title = (f"Distillation: perplexity on {measured.get('eval_tokens', 0):,} enwiki evaluation "
             f"tokens; training {fixed(measured.get('train_tokens_per_s'), '{:,.0f}')} tokens/s"
             + (f", teacher signal {measured['signal_bytes_per_token']:.0f} bytes/token"
                if measured.get("signal_bytes_per_token") else ""))
    return title, ["model", "perplexity", "KLD vs teacher", "top-1 same", "parameters",
                   "loss gap closed"], table_rows


def markdown_report(result: dict) -> str:
    settings = result["details"]["settings"]
    measured = result["measured"]
    title, columns, rows = summary(result)
    lines = ["# Distillation report", "",
             f"Teacher `{settings['teacher']}` → student "
             + (f"`{settings['student']}`" if settings["student"]
                else f"derived from the teacher, {settings['keep_layers']} layers kept "
                     f"({settings['layer_selection']})")
             + (" with LoRA" if settings["lora"] else "") + ".", "",
             f"Loss: {settings['alpha']} × {settings['loss']} (T = {settings['temperature']}) + "
             f"{round(1 - settings['alpha'], 6)} × cross-entropy; teacher signal "
             f"{settings['teacher_signal']}"
             + (f" (top-{settings['top_k']})" if settings["teacher_signal"] == "offline" else "")
             + f"; {settings['steps']} steps of {settings['batch_size']} × "
             f"{settings['grad_accum']} × {settings['world_size']} sequences of "
             f"{settings['seq_len']} tokens.", ""]
    if rows:
        lines += [f"## {title}", "", "| " + " | ".join(columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        lines += ["", "KLD vs teacher: the mean KL divergence of the student's next-token "
                  "distribution from the teacher's, in nats (0 is the teacher itself); top-1 "
                  "same: the share of tokens whose most likely next token is the teacher's "
                  "(`thrifty eval`, docs/evaluation.md). Loss gap closed: the share of the gap in "
                  "cross-entropy (log perplexity) between the student before training and the "
                  "teacher that training closed.", ""]
    lines += ["## Measured", ""]
    lines += [f"- {name}: {value}" for name, value in measured.items()]
    history = (result["details"].get("train") or {}).get("history") or []
    if history:
        lines += ["", "## Training loss", "", "| step | loss | ce | kd |", "|---|---|---|---|"]
        every = max(1, len(history) // 20)
        lines += [f"| {h['step']} | {h['loss']:.4f} | {h['ce']} | {h['kd']} |"
                  for h in history[::every]]
    return "\n".join(lines) + "\n"
