"""Memory fit: weights + KV cache + runtime overhead against each GPU, with tensor parallelism.

The budget follows vLLM: it may use `gpu_memory_utilization` (default 0.9) of a GPU's memory,
holds the weights, a runtime reserve (activations of one scheduler step, CUDA graphs, library
workspaces) and gives the rest to the KV cache. Every figure here is modelled.
"""

from dataclasses import dataclass

from thrifty.cost.catalog import Gpu
from thrifty.cost.model_shape import GIB, ModelShape

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of device memory
RUNTIME_FIXED_GIB = 1.5  # CUDA context, cuBLAS/NCCL workspaces and CUDA graphs, per GPU
TP_SIZES = (1, 2, 4, 8)


def max_batched_tokens(gpu: Gpu) -> int:
    """vLLM's default token budget per scheduler step for its OpenAI server on this GPU
    (vllm/engine/arg_utils.py: 16384 at >= 160 GiB, 8192 at >= 70 GiB except A100, else 2048)."""
    if gpu.memory_gib >= 160:
        return 16384
    if gpu.memory_gib >= 70 and "a100" not in gpu.id:
        return 8192
    return 2048


@dataclass(frozen=True)
class Fit:
    gpu: Gpu
    tensor_parallel: int | None  # GPUs per replica; None: fits on no node of this GPU
    weights_gib_per_gpu: float
    runtime_gib_per_gpu: float
    kv_gib_needed_per_gpu: float
    kv_gib_available_per_gpu: float
    kv_tokens_capacity: int  # KV-cache tokens one replica holds
    max_concurrency: int  # sequences of `context` tokens that fit at once
    needed_gib_total: float  # weights + runtime + the requested KV cache, all GPUs

    @property
    def fits(self) -> bool:
        return self.tensor_parallel is not None

    def as_dict(self, context: int, concurrency: int) -> dict:
        return {"gpu": self.gpu.id, "fits": self.fits, "tensor_parallel": self.tensor_parallel,
                "gpus_per_replica": self.tensor_parallel,
                "weights_gib_per_gpu": round(self.weights_gib_per_gpu, 2),
                "runtime_gib_per_gpu": round(self.runtime_gib_per_gpu, 2),
                "kv_cache_gib_needed_per_gpu": round(self.kv_gib_needed_per_gpu, 2),
                "kv_cache_gib_available_per_gpu": round(self.kv_gib_available_per_gpu, 2),
                "kv_cache_tokens": self.kv_tokens_capacity,
                "max_concurrency_at_context": self.max_concurrency,
                "needed_gib_total": round(self.needed_gib_total, 2),
                "context_tokens": context, "concurrency": concurrency, "figures": "modelled"}


def runtime_gib(shape: ModelShape, gpu: Gpu, tp: int) -> float:
    """Activations of one full scheduler step (hidden states and the MLP's gate/up outputs in
    16-bit), split across the tensor-parallel group, plus a fixed reserve."""
    tokens = max_batched_tokens(gpu)
    activations = tokens * (4 * shape.hidden + 2 * shape.intermediate / tp) * 2
    return RUNTIME_FIXED_GIB + activations / GIB


def kv_share(shape: ModelShape, tp: int) -> float:
    """The part of each token's KV cache one GPU holds: KV heads are split across the group,
    and replicated when there are fewer KV heads than GPUs."""
    return max(1, tp // shape.kv_heads) / tp if tp > shape.kv_heads else 1 / tp


def fit(shape: ModelShape, gpu: Gpu, context: int, concurrency: int = 1) -> Fit:
    """The smallest tensor-parallel group of `gpu` that holds the model and `concurrency`
    sequences of `context` tokens."""
    kv_needed = shape.kv_bytes_per_token * context * concurrency
    budget = gpu.memory_gib * GPU_MEMORY_UTILIZATION
    last = None
    for tp in TP_SIZES:
        if tp > gpu.max_per_node or shape.heads % tp:
            continue
        weights = shape.weight_bytes / tp / GIB
        runtime = runtime_gib(shape, gpu, tp)
        kv_per_gpu = kv_needed * kv_share(shape, tp) / GIB
        available = budget - weights - runtime
        tokens = int(available * GIB / (shape.kv_bytes_per_token * kv_share(shape, tp))) \
            if available > 0 else 0
        last = Fit(gpu, tp, weights, runtime, kv_per_gpu, max(0.0, available), tokens,
                   tokens // context if context else 0,
                   (weights + runtime + kv_per_gpu) * tp)
        if available >= kv_per_gpu and tokens >= context:
            return last
    one_gpu = shape.weight_bytes / GIB + runtime_gib(shape, gpu, 1) + kv_needed / GIB
    if last is None:
        return Fit(gpu, None, shape.weight_bytes / GIB, runtime_gib(shape, gpu, 1),
                   kv_needed / GIB, 0.0, 0, 0, one_gpu)
    return Fit(gpu, None, last.weights_gib_per_gpu, last.runtime_gib_per_gpu,
               last.kv_gib_needed_per_gpu, last.kv_gib_available_per_gpu, 0, 0, one_gpu)


def memory_needed_text(shape: ModelShape, context: int, concurrency: int) -> str:
    kv = shape.kv_bytes_per_token * context * concurrency / GIB
    return (f"{shape.weight_bytes / GIB:.1f} GiB of weights ({shape.precision}) + {kv:.1f} GiB "
            f"of KV cache for {concurrency} x {context} tokens + runtime reserve")
