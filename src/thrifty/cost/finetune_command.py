"""`thrifty cost finetune`: memory, GPUs, hours and dollars for fine-tuning a model."""

import click

from thrifty.core.errors import BadInput
from thrifty.core.output import emit_json, json_option, table
from thrifty.cost import catalog, finetune_cost, model_shape
from thrifty.cost.command_options import catalog_option, split_names, warn_stale


@click.command("finetune")
@click.argument("model")
@click.option("--tokens", type=float, required=True, help="Training tokens per epoch.")
@click.option("--epochs", type=float, default=1, show_default=True)
@click.option("--method", "methods", default="full,lora,qlora", show_default=True,
              help=f"Comma-separated: {', '.join(finetune_cost.METHODS)}.")
@click.option("--teacher", help="The teacher model, for --method distill.")
@click.option("--teacher-signal", type=click.Choice(["offline", "online"]), default="offline",
              show_default=True, help="distill: the teacher's top-k log-probabilities captured "
              "once with vLLM (as `thrifty distill` does by default), or the teacher inside "
              "every training step.")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True,
              help="distill: log-probabilities stored per token (offline signal).")
@click.option("--gpu", "gpu_names", metavar="LIST", default="h100-sxm,a100-80gb,l40s",
              show_default=True)
@click.option("--sequence-tokens", type=int, default=2048, show_default=True)
@click.option("--micro-batch", type=int, default=1, show_default=True)
@click.option("--lora-rank", type=int, default=16, show_default=True)
@click.option("--mfu", type=float, default=0.4, show_default=True,
              help="Model FLOPs utilisation the run reaches.")
@click.option("--pricing", type=click.Choice(catalog.PRICE_KINDS), default="on-demand",
              show_default=True)
@catalog_option
@json_option
def cost_finetune(model, tokens, epochs, methods, teacher, teacher_signal, top_k, gpu_names,
                  sequence_tokens, micro_batch, lora_rank, mfu, pricing, catalog_file,
                  as_json) -> None:
    """Memory, GPUs, hours and dollars for fine-tuning MODEL (full, LoRA, QLoRA, distill).

    Model states per parameter: full 16 B (bf16 weights and gradients, fp32 Adam), LoRA 2 B
    plus the adapter, QLoRA ~0.52 B (NF4) plus the adapter; activations with gradient
    checkpointing. All figures are modelled.
    """
    names = split_names(methods) or []
    unknown = [m for m in names if m not in finetune_cost.METHODS]
    if unknown or not names:
        raise BadInput(f"--method {methods!r}: choose from {', '.join(finetune_cost.METHODS)}.")
    if tokens <= 0 or epochs <= 0 or not 0 < mfu <= 1:
        raise BadInput("--tokens and --epochs must be positive and --mfu in (0, 1].")
    if "distill" in names and not teacher:
        raise BadInput("--method distill needs --teacher MODEL (the model whose outputs the "
                       "student learns from).")
    shape = model_shape.load(model)
    teacher_shape = model_shape.load(teacher) if teacher else None
    cat = catalog.load(catalog_file)
    rows = []
    for gpu in cat.select(split_names(gpu_names)):
        for method in names:
            job = finetune_cost.Job(method, tokens, epochs, sequence_tokens, micro_batch,
                                    lora_rank, mfu, teacher_shape, teacher_signal, top_k)
            price = cat.cheapest(gpu.id, pricing)
            rows.append(finetune_cost.plan(shape, job, gpu, price))
            if method == "distill" and teacher_signal == "offline":
                rows.append(finetune_cost.capture_plan(job, gpu, price))
    if as_json:
        emit_json({"model": model, "figures": "modelled", "plans": rows})
        return
    table(f"Fine-tuning {model} ({shape.params / 1e9:.2f} B parameters) on {tokens:,.0f} tokens "
          f"x {epochs:g} epochs (modelled, MFU {mfu:g}, {pricing} prices)",
          ["method", "GPU", "model states GB", "total GB", "GPUs", "hours", "GPU-hours", "$"],
          [[r["method"], r["gpu"], f"{r['model_states_gb']:,.1f}", f"{r['total_gb']:,.1f}",
            r["gpus"] or r.get("problem"), r.get("hours", "–"), r.get("gpu_hours", "–"),
            f"{r['usd']:,.2f}" if "usd" in r else "no price"] for r in rows])
    capture = next((r for r in rows if "signal_gb" in r), None)
    if capture:
        click.echo(f"Offline distillation = training + one teacher capture (vLLM prefill of "
                   f"{teacher}); the captured top-{top_k} signal takes "
                   f"{capture['signal_bytes_per_token']} bytes/token, {capture['signal_gb']:,} GB "
                   "on disk.")
    warn_stale([cat.cheapest(g.id, pricing) for g in cat.select(split_names(gpu_names))
                if cat.cheapest(g.id, pricing)])
