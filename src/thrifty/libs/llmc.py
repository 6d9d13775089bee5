"""All of thrifty's llm-compressor calls, in one place (runs inside the compress engine).

llm-compressor's API moves between releases (AWQ moved to modifiers.transform.awq in 0.14);
the version is pinned in engines/compress.txt and nothing else in thrifty imports it.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

METHODS = ("gptq", "awq", "awq-gptq", "rtn")


def version() -> str:
    import llmcompressor

    return llmcompressor.__version__


def awq_architectures() -> list[str]:
    """Architectures for which llm-compressor knows AWQ's smoothing-layer mappings."""
    from llmcompressor.modifiers.transform.awq import (
        AWQ_DYNAMIC_MAPPING_REGISTRY,
        AWQ_MAPPING_REGISTRY,
    )

    return sorted({*AWQ_MAPPING_REGISTRY, *AWQ_DYNAMIC_MAPPING_REGISTRY})


def scheme_groups(preset: str, bits: int, symmetric: bool, group_size: int | None,
                  actorder: bool | None, observer: str | None = None) -> dict:
    """The config groups for every Linear layer: compressed-tensors' preset of that name for
    channel- and tensor-scaled schemes (W8A8, FP8, FP8_DYNAMIC), else integer weights in
    groups of group_size at any width from 2 to 8 bits. `observer` picks how weight scales
    are chosen (None: llm-compressor's min-max)."""
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationScheme,
        preset_name_to_scheme,
    )

    if group_size is None:
        scheme = preset_name_to_scheme(preset, ["Linear"])
        if observer:
            scheme.weights.observer = observer
        return {"group_0": scheme}
    weights = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric,
                               strategy="group", group_size=group_size, dynamic=False,
                               actorder="static" if actorder else None, observer=observer)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


def recipe(method: str, config_groups: dict, ignore: list[str], actorder: bool,
           dampening_frac: float, block_size: int, smoothquant: float | None = None) -> list:
    """The modifiers, in order: SmoothQuant first where asked (it rescales weights and the norms
    before them), then the weight method. awq-gptq: AWQ's scaling, then GPTQ's error
    correction on the scaled weights (AWQ takes the quantization scheme from the GPTQ
    modifier after it)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    first = []
    if smoothquant:
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        first = [SmoothQuantModifier(smoothing_strength=smoothquant)]
    if method == "awq-gptq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        first = [*first, AWQModifier()]
    if method in ("gptq", "awq-gptq"):
        return [*first, GPTQModifier(config_groups=config_groups, ignore=ignore,
                                     actorder="static" if actorder else None,
                                     dampening_frac=dampening_frac, block_size=block_size)]
    if method == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=config_groups, ignore=ignore)]
    if method == "rtn":
        return [*first, QuantizationModifier(config_groups=config_groups, ignore=ignore)]
    raise ValueError(method)


def recipe_yaml(modifiers: list) -> str:
    """The recipe as llm-compressor would write it, for the output's record."""
    lines = []
    for modifier in modifiers:
        fields = modifier.model_dump(exclude_defaults=True, mode="json")
        lines.append(f"{type(modifier).__name__}: {fields}")
    return "\n".join(lines) + "\n"


def calibration_dataset(samples: list[list[int]]):
    """Pre-tokenized samples in the form oneshot() takes (it skips its own tokenization)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": samples,
                              "attention_mask": [[1] * len(s) for s in samples]})


def oneshot(model, dataset, modifiers: list, num_samples: int, seq_len: int,
            on_layer: Callable[[int], None]) -> None:
    from llmcompressor import oneshot as llmc_oneshot

    with _cpu_awq_workaround(), _layer_progress(on_layer):
        llmc_oneshot(model=model, dataset=dataset, recipe=modifiers,
                     num_calibration_samples=num_samples, max_seq_length=seq_len,
                     shuffle_calibration_samples=False)


def save_compressed(model, out_dir: str) -> None:
    model.save_pretrained(out_dir, save_compressed=True)


@contextmanager
def _layer_progress(on_layer: Callable[[int], None]) -> Iterator[None]:
    """Call on_layer(n) after each sequential layer is calibrated (n counts from 1)."""
    from llmcompressor.core import LifecycleCallbacks

    original = LifecycleCallbacks.__dict__["sequential_epoch_end"]
    done = 0

    def counting(cls, *args, **kwargs):
        nonlocal done
        result = original.__func__(cls, *args, **kwargs)
        done += 1
        on_layer(done)
        return result

    LifecycleCallbacks.sequential_epoch_end = classmethod(counting)
    try:
        yield
    finally:
        LifecycleCallbacks.sequential_epoch_end = original


@contextmanager
def _cpu_awq_workaround() -> Iterator[None]:
    """AWQ pins cached activations for fast host-to-device copies, which fails on a machine
    without an accelerator ("Cannot access accelerator device when none is available").
    Pinning only matters for transfers to a GPU, so on CPU-only machines it becomes a no-op."""
    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
