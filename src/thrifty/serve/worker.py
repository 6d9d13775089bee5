"""vLLM-engine tasks: offline generation, offline batch latency (serve/latency.py), and the
teacher signal of offline distillation (serve/teacher.py).

Run as `<vllm engine python> -m thrifty.serve.worker <job file>`. The `__main__` guard matters:
vLLM's offline engine spawns worker processes that re-import the main module.
"""

import time

from thrifty.core.jobs import Events, worker_main


def generate(params: dict, events: Events) -> dict:
    from thrifty.serve import engine

    events.progress("start vLLM", 0, 1, "steps")
    started = time.monotonic()
    llm = engine.offline_llm(params["model"], params["max_model_len"], eager=not params["compile"])
    start_s = time.monotonic() - started
    events.progress("start vLLM", 1, 1, "steps")
    events.progress("generate", 0, len(params["prompts"]), "prompts")
    started = time.monotonic()
    outputs = llm.generate(params["prompts"], engine.greedy_params(params["max_tokens"]))
    generate_s = time.monotonic() - started
    events.progress("generate", len(params["prompts"]), len(params["prompts"]), "prompts")
    completions = [
        {"prompt": o.prompt, "text": o.outputs[0].text,
         "prompt_tokens": len(o.prompt_token_ids), "output_tokens": len(o.outputs[0].token_ids)}
        for o in outputs
    ]
    return {"completions": completions, "engine_start_s": round(start_s, 2),
            "generate_s": round(generate_s, 3), "vllm_version": engine.version()}


if __name__ == "__main__":
    from thrifty.serve.latency import latency
    from thrifty.serve.teacher import teacher_topk

    worker_main({"generate": generate, "latency": latency, "teacher_topk": teacher_topk})
