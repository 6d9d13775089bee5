"""A fix for vLLM refusing LoRA over an INT8 W8A8 base on CPUs without AMX (runs inside the
vllm engine, before vLLM starts).

There vLLM 0.32.0 hands the int8 weight to a oneDNN kernel and sets the layer's `weight` to
None (model_executor/kernels/linear/scaled_mm/cpu.py); its LoRA layers then ask that weight for
the device to put the adapter on (vllm/lora/layers/utils.py, `_get_lora_device`) and the engine
fails to start with "'NoneType' object has no attribute 'device'". `install` answers with the
device of the layer's other tensors (the weight scale) when the weight is gone. A vLLM general
plugin, registered beside vllm_cpu_lora (core/jobs.engine_pythonpath).
"""

import logging

from thrifty.libs.vllm_patching import wrap_once


def install() -> bool:
    """Patch vLLM's LoRA device lookup; False when this vLLM has none (nothing to fix)."""
    try:
        import vllm.lora.layers.base_linear as base_linear
        import vllm.lora.layers.utils as utils
    except Exception:  # vLLM runs plugins without a try: failing here would stop vLLM
        return False
    original = getattr(utils, "_get_lora_device", None)

    def make(original):
        def lora_device(base_layer):
            if getattr(base_layer, "weight", True) is None:  # released to a prepacked kernel
                for tensor in (*base_layer.parameters(), *base_layer.buffers()):
                    return tensor.device
            return original(base_layer)
        return lora_device

    if not wrap_once(utils, "_get_lora_device", make):
        logging.getLogger(__name__).warning(
            "thrifty's LoRA device fix does not apply to this vLLM (its LoRA layers changed)")
        return False
    if getattr(base_linear, "_get_lora_device", None) is original:
        base_linear._get_lora_device = utils._get_lora_device  # imported by name there
    return True
