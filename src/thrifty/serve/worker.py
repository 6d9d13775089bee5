"""Engine tasks of serve: `generate` (offline greedy generation in the vLLM engine) and the
adapter tasks of serve/lora.py (training, merging, reference generation in the compress engine).

Run as `<engine python> -m thrifty.serve.worker <job file>`. The `__main__` guard matters:
vLLM's offline engine spawns worker processes that re-import the main module.
"""

import time

from thrifty.core.jobs import Events, worker_main
from thrifty.serve import lora


def generate(params: dict, events: Events) -> dict:
    from thrifty.libs import vllm_offline

    events.progress("start vLLM", 0, 1, "steps")
    started = time.monotonic()
    llm = vllm_offline.offline_llm(params["model"], params["max_model_len"],
                                   eager=not params["compile"])
    start_s = time.monotonic() - started
    events.progress("start vLLM", 1, 1, "steps")
    events.progress("generate", 0, len(params["prompts"]), "prompts")
    started = time.monotonic()
    outputs = llm.generate(params["prompts"], vllm_offline.greedy_params(params["max_tokens"]))
    generate_s = time.monotonic() - started
    events.progress("generate", len(params["prompts"]), len(params["prompts"]), "prompts")
    completions = [
        {"prompt": o.prompt, "text": o.outputs[0].text,
         "prompt_tokens": len(o.prompt_token_ids), "output_tokens": len(o.outputs[0].token_ids)}
        for o in outputs
    ]
    return {"completions": completions, "engine_start_s": round(start_s, 2),
            "generate_s": round(generate_s, 3), "vllm_version": vllm_offline.version()}


TASKS = {"generate": generate, "train_adapters": lora.train_adapters,
         "merge_adapter": lora.merge_adapter, "reference_generate": lora.reference_generate}

if __name__ == "__main__":
    worker_main(TASKS)
