"""The throughput model: a roofline per engine step, with calibrated efficiencies.

One engine step (one forward pass of vLLM's continuous batch) takes

    step = overhead + max(bytes read / (bandwidth x memory efficiency),
                          FLOPs / (peak matmul rate x compute efficiency))

Bytes are the weights (every decode step reads all of them) plus the KV cache the batch attends
to; FLOPs are 2 x linear parameters per token plus attention. Decode steps are memory-bound,
prefill compute-bound. The three efficiencies, and the lag between a client's send and the
engine's queue, are fitted to a `thrifty bench` run on real hardware (calibrate.py) and applied
to other hardware; without a calibration, defaults are used and every output says so.
"""

import math
from dataclasses import asdict, dataclass, replace

from thrifty.cost.catalog import Gpu
from thrifty.cost.fit import max_batched_tokens
from thrifty.cost.model_shape import ModelShape

MAX_NUM_SEQS = 256  # vLLM's default cap on sequences in one batch (OpenAI server, most GPUs)
# vLLM v1 hands a step's tokens to the API server process, which detokenizes and streams them
# while the engine runs the next step: a client sees a token when the step after the one that
# computed it ends (the H100 measurements' TTFT is ~3 steps, not 1.5; docs/cost.md).
OUTPUT_DELAY_STEPS = 1.0


@dataclass(frozen=True)
class Link:
    """How a GPU talks to the others of its node, for tensor parallelism's all-reduces."""
    gb_s: float  # each direction
    allreduce_latency_us: float
    source: str


# NVLink: vLLM's custom all-reduce, a few microseconds per small message (fitted with the
# efficiencies on the H100 measurements, see docs/cost.md). PCIe: vLLM turns its custom
# all-reduce off beyond two PCIe GPUs and NCCL's ring pays a hop per GPU; assumed 4x NVLink's.
NVLINK_ALLREDUCE_US = 12.27  # benchmarks/results/gpu_efficiency_fit.json
PCIE_ALLREDUCE_US = 4 * NVLINK_ALLREDUCE_US


def interconnect_of(gpu: Gpu) -> Link:
    """The catalog's interconnect as a link: its bandwidth is the two directions together."""
    if "nvlink" in gpu.interconnect.lower():
        return Link(gpu.interconnect_gb_s / 2, NVLINK_ALLREDUCE_US, "fitted on H100 NVLink")
    return Link(gpu.interconnect_gb_s / 2, PCIE_ALLREDUCE_US, "assumed (4x NVLink's)")


@dataclass(frozen=True)
class Hardware:
    """What the roofline needs to know about a device."""
    name: str
    bandwidth_gb_s: float
    bf16_tflops: float
    int8_tops: float | None  # None: vLLM runs no INT8 W8A8 here
    fp8_tflops: float | None = None
    max_batched_tokens: int = 2048
    max_num_seqs: int = MAX_NUM_SEQS
    kind: str = "gpu"  # "gpu" or "cpu"
    link_gb_s: float = 0.0  # GPU-to-GPU bandwidth, each direction (tensor parallelism)
    allreduce_latency_us: float = 0.0  # fixed cost of one small all-reduce on that link

    def low_precision_rate(self, shape: ModelShape) -> float:
        """Peak FLOP/s of 8-bit activations: FP8 on FP8 tensor cores, INT8 on INT8 ones. A GPU
        without FP8 runs FP8 checkpoints weight-only (vLLM's Marlin FP8), at the 16-bit rate."""
        if shape.weight_format == "float":
            return (self.fp8_tflops or self.bf16_tflops) * 1e12
        return self.int8_tops * 1e12

    def matmul_seconds(self, shape: ModelShape, flops: float) -> float:
        """Time of a step's linear-layer FLOPs at peak: the share that runs at the 8-bit rate
        (W8A8, FP8) and the rest (16-bit activations, layers kept 16-bit) at the 16-bit rate."""
        low = shape.low_precision_flops_share()
        if not low:  # 16-bit activations: the 8-bit rate (which may be absent) plays no part
            return flops / (self.bf16_tflops * 1e12)
        return flops * (low / self.low_precision_rate(shape)
                        + (1 - low) / (self.bf16_tflops * 1e12))

    def allreduce_seconds(self, shape: ModelShape, tokens: int, tp: int) -> float:
        """Tensor parallelism's all-reduces in one step: two per layer (after attention, after
        the MLP) of tokens x hidden 16-bit values, ring algorithm over the link."""
        if tp <= 1:
            return 0.0
        message = tokens * shape.hidden * 2
        ring = 2 * (tp - 1) / tp * message / (self.link_gb_s * 1e9)
        return 2 * shape.layers * (self.allreduce_latency_us * 1e-6 + ring)

    @classmethod
    def from_gpu(cls, gpu: Gpu) -> "Hardware":
        link = interconnect_of(gpu)
        return cls(gpu.id, gpu.bandwidth_gb_s, gpu.bf16_tflops, gpu.int8_tops, gpu.fp8_tflops,
                   max_batched_tokens(gpu), 1024 if max_batched_tokens(gpu) > 2048 else 256,
                   link_gb_s=link.gb_s, allreduce_latency_us=link.allreduce_latency_us)

    @classmethod
    def from_probe(cls, probe: dict) -> "Hardware":
        cpu = probe["device"] == "cpu"
        rate = probe["bf16_tflop_per_s"]
        # vLLM's OpenAI server defaults: 2048 tokens per step; 128 sequences on CPU
        return cls(probe["hardware"], probe["bandwidth_gb_per_s"], rate, rate, None,
                   2048, 128 if cpu else MAX_NUM_SEQS, "cpu" if cpu else "gpu")


@dataclass(frozen=True)
class Efficiency:
    memory: float  # achieved share of peak memory bandwidth
    compute: float  # achieved share of peak matmul rate
    overhead_ms: float  # fixed cost of each engine step: scheduling, sampling, launch
    source: str = "default"  # "default", or what it was calibrated on
    lag_ms: float = 0.0  # from a client's send to the engine's queue (HTTP, API server)

    def as_dict(self) -> dict:
        return asdict(self)


# Defaults for GPUs that no fit covers: typical shares reached by vLLM's kernels on
# data-center GPUs. Outputs that use them are labelled "modelled (default efficiency)".
DEFAULT_GPU_EFFICIENCY = Efficiency(memory=0.75, compute=0.55, overhead_ms=3.0, lag_ms=2.0)


def fitted_efficiency(gpu: Gpu) -> Efficiency:
    return Efficiency(gpu.efficiency_memory, gpu.efficiency_compute, gpu.step_overhead_ms or 0.0,
                      f"fitted on {gpu.id}: {gpu.efficiency_source}", gpu.request_lag_ms or 0.0)


def efficiency_for(gpu: Gpu, gpus: list[Gpu]) -> Efficiency:
    """The efficiencies vLLM reaches on `gpu`: its own fit from the catalog; else the fit of a
    GPU of the same vendor (same kernels, so the shares carry over better than a guess), said
    so; else the defaults."""
    if gpu.has_efficiency_fit:
        return fitted_efficiency(gpu)
    donor = next((g for g in gpus if g.has_efficiency_fit and g.vendor == gpu.vendor), None)
    if donor is None:
        return DEFAULT_GPU_EFFICIENCY
    return replace(fitted_efficiency(donor), source=f"{donor.id}'s fit applied to {gpu.id} "
                   f"(no measurements of {gpu.id}): {donor.efficiency_source}")


@dataclass(frozen=True)
class Step:
    """One engine step: tokens prefilled, sequences decoded, KV tokens attended."""
    prefill_tokens: int = 0
    prefill_attention: float = 0.0  # sum over prefill chunks of chunk x context
    decodes: int = 0
    context_tokens: int = 0  # KV tokens read by the whole batch
    sampled: int = 0  # sequences that produce a token (lm_head runs for these only)


def step_seconds(shape: ModelShape, hw: Hardware, eff: Efficiency, step: Step,
                 tp: int = 1) -> float:
    tokens = step.prefill_tokens + step.decodes
    read = shape.weight_read_bytes(tokens) + step.context_tokens * shape.kv_bytes_per_token
    linear_s = hw.matmul_seconds(shape, shape.matmul_flops_per_token() * tokens)
    other_flops = (shape.lm_head_flops() * step.sampled
                   + shape.attention_flops(1, 1) * (step.prefill_attention + step.context_tokens))
    compute_s = (linear_s + other_flops / (hw.bf16_tflops * 1e12)) / tp / eff.compute
    memory_s = read / tp / (hw.bandwidth_gb_s * 1e9 * eff.memory)
    return (eff.overhead_ms / 1000 + max(memory_s, compute_s)
            + hw.allreduce_seconds(shape, tokens, tp))


def decode_step(batch: int, context: float) -> Step:
    return Step(decodes=batch, context_tokens=int(batch * context), sampled=batch)


def prefill_step(tokens: int) -> Step:
    return Step(prefill_tokens=tokens, prefill_attention=tokens * tokens / 2, sampled=1)


@dataclass(frozen=True)
class SteadyState:
    """Continuous batching at a constant number of sequences in flight (modelled)."""
    concurrency: int
    step_s: float
    ttft_s: float
    tpot_s: float
    e2e_s: float
    request_rate_per_s: float
    output_tokens_per_s: float

    def as_dict(self) -> dict:
        return {"concurrency": self.concurrency, "ttft_ms": self.ttft_s * 1000,
                "tpot_ms": self.tpot_s * 1000, "e2e_ms": self.e2e_s * 1000,
                "request_rate_per_s": self.request_rate_per_s,
                "output_throughput_tokens_per_s": self.output_tokens_per_s}


def steady_state(shape: ModelShape, hw: Hardware, eff: Efficiency, concurrency: int,
                 input_tokens: int, output_tokens: int, tp: int = 1) -> SteadyState:
    """`concurrency` sequences in flight with staggered starts: every step decodes them and
    prefills the prompts of the ones that just arrived (concurrency / output tokens per step),
    as vLLM's chunked prefill does."""
    b = concurrency
    context = input_tokens + output_tokens / 2
    prefill_per_step = b * input_tokens / output_tokens
    mixed = Step(prefill_tokens=int(prefill_per_step),
                 prefill_attention=prefill_per_step * input_tokens / 2, decodes=b,
                 context_tokens=int(b * context), sampled=b)
    step = step_seconds(shape, hw, eff, mixed, tp)
    # A new prompt waits half a step on average, then its chunks share steps with decodes.
    budget = max(1, hw.max_batched_tokens - b)
    ttft = eff.lag_ms / 1000 + step * (0.5 + math.ceil(input_tokens / budget)
                                       + OUTPUT_DELAY_STEPS)
    e2e = ttft + (output_tokens - 1) * step
    rate = b / e2e
    return SteadyState(b, step, ttft, step, e2e, rate, rate * output_tokens)
