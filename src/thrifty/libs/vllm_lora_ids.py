"""A fix for vLLM's engine dying when an adapter is loaded again under the same name while
requests to its previous load are still running (runs inside the vllm engine, before vLLM
starts).

vLLM gives every load a new integer id, and its scheduler counts adapters by that id, but the
worker collects a batch's adapters in a `set` of LoRARequest, whose equality and hash are the
adapter's *name* (vllm/lora/request.py, 0.32.0). With the old and the new load of one name in
one batch the set keeps only the first; the other id is not activated, and if it is not still
active from before the worker raises `KeyError: <its id>` in `convert_mapping` and the engine
dies (reproduced in tests/integration/test_serve_real.py; twice in 20-minute soaks).

`install` makes both of vLLM's model runners hand the worker one request per adapter *id*.
A vLLM general plugin, registered beside vllm_cpu_lora (core/jobs.engine_pythonpath).
"""

import logging

from thrifty.libs.vllm_patching import wrap_once


def install() -> bool:
    """Patch the batch's adapter list in both model runners; False when neither is there."""
    patched = [_patch_input_batch(), _patch_lora_state()]
    if not any(patched):
        logging.getLogger(__name__).warning(
            "thrifty's LoRA id fix does not apply to this vLLM (its batch code changed); "
            "reloading an adapter under a name still in use may stop the engine")
    return any(patched)


def by_id(lora_requests) -> list:
    """One request per adapter id, in the order first seen (a set would keep one per name)."""
    kept: dict = {}
    for request in lora_requests:
        if request is not None:
            kept.setdefault(request.lora_int_id, request)
    return list(kept.values())


def _patch_input_batch() -> bool:
    """The model runner vLLM's CPU and GPU workers use (v1/worker/gpu_input_batch.py)."""
    try:
        from vllm.v1.worker.gpu_input_batch import InputBatch
    except Exception:  # vLLM runs plugins without a try: failing here would stop vLLM
        return False

    def make(original):
        def make_lora_inputs(self, *args, **kwargs):
            prompt_mapping, token_mapping, requests = original(self, *args, **kwargs)
            known = getattr(self, "lora_id_to_lora_request", None)  # by id: what the set lost
            return prompt_mapping, token_mapping, (requests if known is None
                                                   else by_id(known.values()))
        return make_lora_inputs

    return wrap_once(InputBatch, "make_lora_inputs", make)


def _patch_lora_state() -> bool:
    """The newer model runner (v1/worker/gpu/lora_utils.py), same fault."""
    try:
        from vllm.v1.worker.gpu.lora_utils import LoraState
    except Exception:
        return False

    def make(original):
        def get_activate_loras(self, req_ids):
            return by_id(self.lora_requests.get(req_id) for req_id in req_ids)
        return get_activate_loras

    return wrap_once(LoraState, "get_activate_loras", make)
