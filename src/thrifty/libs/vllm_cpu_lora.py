"""A fix for vLLM's CPU LoRA path (runs inside the vllm engine, before vLLM starts).

vLLM marks a token that belongs to no adapter with LoRA index -1. Its GPU kernels skip such
tokens; its CPU path (vllm/lora/ops/torch_ops, used by PunicaWrapperCPU in 0.32.0) gathers
`weights[indices]`, and Python's -1 picks the *last* adapter slot. So whenever the base model
and adapters share a batch and the last slot holds an adapter, requests for the base model get
that adapter's answer: measured with benchmarks/soak.py, 71 of 79 base requests under mixed
traffic came back with an adapter's greedy completion. The fix appends a zero slot to the
weights of a call that has -1 indices, so -1 selects zeros, as on a GPU.

Registered as a vLLM general plugin (core/jobs.engine_pythonpath writes its entry point), so
vLLM applies it in every process it starts, forked or spawned.
"""

import functools
import logging

PATCHED = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def install() -> bool:
    """Patch the CPU LoRA ops; False when this vLLM has no such path (nothing to fix)."""
    try:
        import vllm.lora.ops.torch_ops.lora_ops as ops
        import vllm.lora.punica_wrapper.punica_cpu as punica_cpu
    except Exception:  # vLLM runs plugins without a try: failing here would stop vLLM
        return False
    if not all(hasattr(ops, name) for name in PATCHED):
        logging.getLogger(__name__).warning(
            "thrifty's CPU LoRA fix does not apply to this vLLM (its LoRA ops changed); "
            "check that base-model requests beside adapter requests get the base's answer")
        return False
    for name in PATCHED:
        original = getattr(ops, name)
        if getattr(original, "thrifty_masked", False):
            continue
        masked = _masked(original)
        setattr(ops, name, masked)  # what the sgmv_* functions call
        if hasattr(punica_cpu, name):
            setattr(punica_cpu, name, masked)  # what PunicaWrapperCPU imported by name
    return True


def _masked(original):
    @functools.wraps(original)
    def call(inputs, weights, output, indices, *args, **kwargs):
        if bool((indices < 0).any()):
            import torch

            zero = weights.new_zeros((1, *weights.shape[1:]))
            weights = torch.cat([weights, zero])  # index -1 now selects this zero slot
        return original(inputs, weights, output, indices, *args, **kwargs)

    call.thrifty_masked = True
    return call
