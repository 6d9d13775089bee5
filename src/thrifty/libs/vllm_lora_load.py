"""A fix for memory kept by every LoRA adapter load in vLLM (runs inside the vllm engine,
before vLLM starts).

vLLM reads an adapter with safetensors' `safe_open(...).get_tensor(name)`. In safetensors
0.8.0 every `get_tensor` (and `load_file`, built on it) keeps about 56 bytes of Python objects
that are never freed, whatever happens to the tensor: 23.5 KB per load of the default model's
adapters (420 tensors), measured with tracemalloc; in a server that hot-swaps adapters it
grows without end (26 KiB of RSS per load and unload in vLLM, measured:
benchmarks/results/lora_load_memory.md). Reading the
file's bytes and decoding them with `safetensors.torch.load` keeps nothing.

`install` gives vLLM's LoRA loader (vllm.lora.lora_model) a `safe_open` of that kind; model
weights still load through safetensors' own, once. A vLLM general plugin, registered beside
vllm_cpu_lora (core/jobs.engine_pythonpath).
"""

import logging
import types

BYTES_LIMIT = 256 * 2**20  # a bigger file is read lazily by safetensors' own safe_open


class BytesSafeOpen:
    """What vLLM's LoRA loader uses of `safe_open` (0.32.0): keys() and get_tensor(), as a
    context manager. The whole file is decoded at once (adapters are small); a file over
    BYTES_LIMIT, or anything else asked of it, goes to safetensors' own safe_open."""

    def __init__(self, path, framework: str = "pt", device: str = "cpu"):
        import os

        import safetensors
        import safetensors.torch

        self._open_args = (path, framework, device)
        self._real = None
        self._tensors: dict = {}
        if os.path.getsize(path) > BYTES_LIMIT:
            self._real = safetensors.safe_open(path, framework=framework, device=device)
            return
        with open(path, "rb") as handle:
            self._tensors = safetensors.torch.load(handle.read())
        if device != "cpu":
            self._tensors = {name: t.to(device) for name, t in self._tensors.items()}

    def __getattr__(self, name: str):
        """Anything but keys/get_tensor (a later vLLM's get_slice, metadata): the real one's."""
        if self.__dict__.get("_real") is None:
            import safetensors

            path, framework, device = self.__dict__["_open_args"]
            self.__dict__["_real"] = safetensors.safe_open(path, framework=framework,
                                                           device=device)
        return getattr(self.__dict__["_real"], name)

    def __enter__(self) -> "BytesSafeOpen":
        return self

    def __exit__(self, *exc) -> None:
        self._tensors = {}

    def keys(self) -> list[str]:
        return self._real.keys() if self._real is not None else list(self._tensors)

    def get_tensor(self, name: str):
        return self._real.get_tensor(name) if self._real is not None else self._tensors[name]


def install() -> bool:
    """Point vLLM's LoRA loader at BytesSafeOpen; False when this vLLM loads adapters
    differently (nothing to fix)."""
    try:
        import safetensors
        import vllm.lora.lora_model as lora_model
    except Exception:  # vLLM runs plugins without a try: failing here would stop vLLM
        return False
    current = getattr(lora_model, "safetensors", None)
    if isinstance(current, types.SimpleNamespace):
        return True  # installed already (vLLM runs plugins in every process, maybe twice)
    if current is not safetensors:
        logging.getLogger(__name__).warning(
            "thrifty's LoRA load fix does not apply to this vLLM (its adapter loader changed)")
        return False
    shim = types.SimpleNamespace(**{name: getattr(safetensors, name)
                                    for name in dir(safetensors) if not name.startswith("__")})
    shim.safe_open = BytesSafeOpen
    lora_model.safetensors = shim
    return True
