"""Memory and dollars per fine-tuning run: full, LoRA, QLoRA, and distillation.

Model states per parameter (mixed-precision AdamW, the accounting of the ZeRO paper):
    full:   2 B bf16 weights + 2 B bf16 gradients + 12 B fp32 master weights and Adam moments
    LoRA:   2 B frozen bf16 weights; the adapter's own parameters carry the 16 B of full training
    QLoRA:  4-bit NF4 weights (0.5 B + 1 fp8 scale per 64 and 1 fp32 per 256 of those scales)
            for the decoder layers; embeddings and lm_head stay bf16; adapter as in LoRA
    distill: the student trained in full. With an online teacher (in the training job) its
            bf16 weights and forward pass join every step; with thrifty's offline signal (the
            default) the teacher runs once, in a separate capture job (vLLM, prefill only)
            on the fewest GPUs that hold its weights, and training reads top-k log-probabilities
            (top_k x (id + fp16) bytes per token) from disk.
Activations assume gradient checkpointing: each layer's input is kept, one layer is recomputed
at a time, and the logits are held in bf16 and fp32 for the loss.
Time: FLOPs per token (6 x params for full training, 4 x params with a frozen base, plus 2 x
params to recompute checkpointed activations, plus the teacher's 2 x params when distilling)
over the GPUs' dense bf16 rate x model FLOPs utilisation (MFU, 0.4 by default).
"""

import math
from dataclasses import dataclass

from thrifty.cost.catalog import Gpu, Price
from thrifty.cost.model_shape import GIB, ModelShape

METHODS = ("full", "lora", "qlora", "distill")
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # weights, fp8 scales, fp32 scale scales
GB = 1e9
# Training may use nearly all device memory (PyTorch keeps a little for its context and
# fragmentation); serving keeps vLLM's 10% margin instead.
TRAINING_MEMORY_UTILIZATION = 0.95


@dataclass(frozen=True)
class Job:
    method: str
    tokens: float  # training tokens per epoch
    epochs: float = 1.0
    sequence_tokens: int = 2048
    micro_batch: int = 1  # sequences per GPU per step
    lora_rank: int = 16
    mfu: float = 0.4
    teacher: ModelShape | None = None  # distillation only
    teacher_signal: str = "offline"  # distillation: "offline" (captured once) or "online"
    top_k: int = 20  # offline teacher signal: log-probabilities kept per token


def lora_params(shape: ModelShape, rank: int) -> int:
    """Rank-r adapters on every linear layer of every decoder layer."""
    per_layer = 0
    q_out, kv_out = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    for fan_in, fan_out in ((shape.hidden, q_out), (shape.hidden, kv_out),
                            (shape.hidden, kv_out), (q_out, shape.hidden),
                            (shape.hidden, shape.intermediate), (shape.hidden, shape.intermediate),
                            (shape.intermediate, shape.hidden)):
        per_layer += rank * (fan_in + fan_out)
    return shape.layers * per_layer


def activation_bytes(shape: ModelShape, job: Job) -> float:
    tokens = job.sequence_tokens * job.micro_batch
    checkpoints = shape.layers * shape.hidden * 2
    one_layer = 16 * shape.hidden + 4 * shape.intermediate
    logits = shape.vocab * (2 + 4)
    return tokens * (checkpoints + one_layer + logits)


def memory(shape: ModelShape, job: Job) -> dict:
    """Bytes of each part of the training state, for one model copy (before sharding)."""
    params = shape.params
    if job.method == "full":
        parts = {"weights": 2 * params, "gradients": 2 * params, "optimizer": 12 * params}
    elif job.method == "distill":
        parts = {"weights": 2 * params, "gradients": 2 * params, "optimizer": 12 * params}
        if _online_teacher(job):
            parts["teacher_weights"] = 2 * job.teacher.params
    elif job.method in ("lora", "qlora"):
        adapter = lora_params(shape, job.lora_rank)
        if job.method == "lora":
            base = 2 * params
        else:
            base = NF4_BYTES_PER_PARAM * shape.linear_params \
                + 2 * (params - shape.linear_params)
        parts = {"weights": base, "adapter_states": 16 * adapter}
    else:
        raise ValueError(job.method)
    parts["activations"] = activation_bytes(shape, job)
    if job.method == "distill" and job.teacher:
        # the teacher's logits (online) or its top-k rows widened to the vocab (offline)
        parts["activations"] += job.sequence_tokens * job.micro_batch * job.teacher.vocab * 4
    return parts


def _online_teacher(job: Job) -> bool:
    return job.method == "distill" and job.teacher is not None and job.teacher_signal == "online"


def signal_bytes_per_token(job: Job) -> int:
    """Stored bytes per token of thrifty's offline signal: ids (uint16 when the vocab fits,
    else int32) and fp16 log-probabilities."""
    id_bytes = 2 if job.teacher and job.teacher.vocab <= 65536 else 4
    return job.top_k * (id_bytes + 2)


def flops_per_token(shape: ModelShape, job: Job) -> float:
    params = shape.params
    if job.method in ("full", "distill"):
        flops = 6 * params
    else:
        flops = 4 * params + 6 * lora_params(shape, job.lora_rank)
    flops += 2 * params  # recomputing checkpointed activations
    if _online_teacher(job):
        flops += 2 * job.teacher.params
    return flops


def capture_plan(job: Job, gpu: Gpu, price: Price | None) -> dict:
    """The offline teacher signal: one prefill pass of the teacher over the training tokens
    (once, whatever the epochs), on the fewest GPUs (tensor parallel) that hold its bf16
    weights within vLLM's 90% memory budget with a tenth of it left for activations."""
    teacher = job.teacher
    weights = 2 * teacher.params
    budget = gpu.memory_gib * GIB * 0.9 * 0.9
    gpus = next((n for n in (1, 2, 4, 8) if weights / n <= budget), None)
    result = {"method": "distill: teacher capture", "model": teacher.name,
              "params": teacher.params, "gpu": gpu.id,
              "memory_gb": {"teacher_weights": round(weights / GB, 1)},
              "model_states_gb": round(weights / GB, 1), "total_gb": round(weights / GB, 1),
              "gpus": gpus, "tokens": job.tokens, "mfu": job.mfu, "figures": "modelled",
              "signal_gb": round(job.tokens * signal_bytes_per_token(job) / GB, 1),
              "signal_bytes_per_token": signal_bytes_per_token(job)}
    if gpus is None:
        result["problem"] = (f"the teacher's {weights / GB:.0f} GB of bf16 weights need more "
                             f"than 8 x {gpu.memory_gib:g} GiB; capture from a quantized "
                             "teacher")
        return result
    hours = 2 * teacher.params * job.tokens / (gpus * gpu.bf16_tflops * 1e12 * job.mfu) / 3600
    result.update({"hours": round(hours, 2), "gpu_hours": round(hours * gpus, 1)})
    if price:
        result["usd"] = round(hours * gpus * price.usd_per_gpu_hour, 2)
    return result


def plan(shape: ModelShape, job: Job, gpu: Gpu, price: Price | None) -> dict:
    """The smallest number of these GPUs that holds the job (states sharded ZeRO-3 / FSDP
    style across them; activations per GPU), and the time and money for the run."""
    parts = memory(shape, job)
    states = sum(v for k, v in parts.items() if k != "activations")
    budget = gpu.memory_gib * GIB * TRAINING_MEMORY_UTILIZATION
    gpus = None
    for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        if states / n + parts["activations"] <= budget:
            gpus = n
            break
    total_flops = flops_per_token(shape, job) * job.tokens * job.epochs
    result = {
        "method": job.method, "model": shape.name, "params": shape.params,
        "gpu": gpu.id, "memory_gb": {k: round(v / GB, 1) for k, v in parts.items()},
        "model_states_gb": round(states / GB, 1),
        "total_gb": round((states + parts["activations"]) / GB, 1),
        "gpus": gpus, "nodes": math.ceil(gpus / gpu.max_per_node) if gpus else None,
        "tokens": job.tokens, "epochs": job.epochs, "mfu": job.mfu,
        "train_flops": total_flops, "figures": "modelled",
    }
    if job.method in ("lora", "qlora"):
        result["adapter_params"] = lora_params(shape, job.lora_rank)
    if gpus is None:
        result["problem"] = (f"needs {result['total_gb']:.0f} GB; more than 256 x "
                             f"{gpu.memory_gib:g} GiB")
        return result
    hours = total_flops / (gpus * gpu.bf16_tflops * 1e12 * job.mfu) / 3600
    result["hours"] = round(hours, 2)
    result["gpu_hours"] = round(hours * gpus, 1)
    if price:
        result["usd"] = round(hours * gpus * price.usd_per_gpu_hour, 2)
        result["price"] = {"usd_per_gpu_hour": price.usd_per_gpu_hour,
                           "provider": price.provider, "kind": price.kind,
                           "date": price.date.isoformat(), "source": price.source}
    return result
