"""Memory fit: weights + KV cache + runtime overhead against each GPU, with tensor parallelism.

The budget follows vLLM: it may use `gpu_memory_utilization` (default 0.9) of a GPU's memory,
holds the weights, a runtime reserve (activations of one scheduler step, CUDA graphs, library
workspaces) and gives the rest to the KV cache. Every figure here is modelled.
"""

from dataclasses import dataclass, replace

from thrifty.core.errors import BadInput
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
    tp_chosen_by: str = "smallest group that fits"  # or "--tensor-parallel", "the bench run"
    reason: str = ""  # why it does not fit, when it does not

    @property
    def fits(self) -> bool:
        return self.tensor_parallel is not None

    def as_dict(self, context: int, concurrency: int) -> dict:
        return {"gpu": self.gpu.id, "fits": self.fits, "tensor_parallel": self.tensor_parallel,
                "gpus_per_replica": self.tensor_parallel,
                "tensor_parallel_chosen_by": self.tp_chosen_by, "reason": self.reason or None,
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


def _fit_at(shape: ModelShape, gpu: Gpu, context: int, concurrency: int,
            tp: int) -> tuple[Fit, bool]:
    """The figures of a group of `tp` GPUs, and whether the model and its KV cache fit it."""
    budget = gpu.memory_gib * GPU_MEMORY_UTILIZATION
    weights = shape.weight_bytes / tp / GIB
    runtime = runtime_gib(shape, gpu, tp)
    kv_per_gpu = shape.kv_bytes_per_token * context * concurrency * kv_share(shape, tp) / GIB
    available = budget - weights - runtime
    tokens = int(available * GIB / (shape.kv_bytes_per_token * kv_share(shape, tp))) \
        if available > 0 else 0
    at = Fit(gpu, tp, weights, runtime, kv_per_gpu, max(0.0, available), tokens,
             tokens // context if context else 0, (weights + runtime + kv_per_gpu) * tp)
    return at, available >= kv_per_gpu and tokens >= context


def fit(shape: ModelShape, gpu: Gpu, context: int, concurrency: int = 1,
        tp: int | None = None) -> Fit:
    """The smallest tensor-parallel group of `gpu` that holds the model and `concurrency`
    sequences of `context` tokens; with `tp`, that group size or nothing."""
    if tp is not None:
        return _fit_given(shape, gpu, context, concurrency, tp)
    kv_needed = shape.kv_bytes_per_token * context * concurrency
    last = None
    for size in TP_SIZES:
        if size > gpu.max_per_node or shape.heads % size:
            continue
        last, ok = _fit_at(shape, gpu, context, concurrency, size)
        if ok:
            return last
    one_gpu = shape.weight_bytes / GIB + runtime_gib(shape, gpu, 1) + kv_needed / GIB
    reason = (f"does not fit: needs {one_gpu:.0f} GiB (more than {gpu.max_per_node} x "
              f"{gpu.memory_gib:g} GiB)")
    if last is None:
        return Fit(gpu, None, shape.weight_bytes / GIB, runtime_gib(shape, gpu, 1),
                   kv_needed / GIB, 0.0, 0, 0, one_gpu, reason=reason)
    return replace(last, tensor_parallel=None, kv_tokens_capacity=0, max_concurrency=0,
                   needed_gib_total=one_gpu, reason=reason)


def _fit_given(shape: ModelShape, gpu: Gpu, context: int, concurrency: int, tp: int) -> Fit:
    """A group of exactly `tp` GPUs (the user's --tensor-parallel), or why it cannot be."""
    at, ok = _fit_at(shape, gpu, context, concurrency, tp)
    if ok and tp <= gpu.max_per_node and not shape.heads % tp:
        return replace(at, tp_chosen_by="--tensor-parallel")
    if tp > gpu.max_per_node:
        reason = (f"--tensor-parallel {tp} needs {tp} GPUs in one node; a {gpu.id} node holds "
                  f"{gpu.max_per_node}")
    elif shape.heads % tp:
        reason = f"its {shape.heads} attention heads do not split over {tp} GPUs"
    else:
        smallest = fit(shape, gpu, context, concurrency).tensor_parallel
        per_gpu = at.needed_gib_total / tp
        reason = (f"does not fit at --tensor-parallel {tp}: needs {per_gpu:.1f} GiB on each GPU, "
                  f"{gpu.memory_gib * GPU_MEMORY_UTILIZATION:.1f} GiB usable; "
                  + (f"{smallest} GPUs would hold it" if smallest
                     else "no node of it holds the model"))
    return replace(at, tensor_parallel=None, kv_tokens_capacity=0, max_concurrency=0,
                   tp_chosen_by="--tensor-parallel", reason=reason)


def check_tensor_parallel(tp: int | None, shapes: list[ModelShape], gpus: list[Gpu]) -> None:
    """Refuse a --tensor-parallel that no costed GPU and model could be served with."""
    if tp is None:
        return
    largest = max(g.max_per_node for g in gpus)
    if tp < 1 or tp & (tp - 1):
        raise BadInput(f"--tensor-parallel {tp} is not a power of two: vLLM splits a model over "
                       f"1, 2, 4 or 8 GPUs of one node (up to {largest} here). Give one of those, "
                       "or leave it out to use the smallest group that holds the model.")
    if tp > largest:
        raise BadInput(f"--tensor-parallel {tp} is more GPUs than a node of any GPU costed here "
                       f"holds (at most {largest}); tensor parallelism stays within a node. Give "
                       f"{largest} or fewer, or leave it out to use the smallest group that fits.")
    for shape in shapes:
        if shape.heads % tp:
            sizes = [n for n in TP_SIZES if not shape.heads % n and n <= largest]
            raise BadInput(f"--tensor-parallel {tp}: {shape.name} has {shape.heads} attention "
                           f"heads, which vLLM cannot split evenly over {tp} GPUs. Give a size "
                           f"that divides them ({', '.join(map(str, sizes))}).")


def memory_needed_text(shape: ModelShape, context: int, concurrency: int) -> str:
    kv = shape.kv_bytes_per_token * context * concurrency / GIB
    return (f"{shape.weight_bytes / GIB:.1f} GiB of weights ({shape.precision}) + {kv:.1f} GiB "
            f"of KV cache for {concurrency} x {context} tokens + runtime reserve")
