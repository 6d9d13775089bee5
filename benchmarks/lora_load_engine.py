"""Runs inside the vllm engine for benchmarks/lora_load_memory.py: one vLLM process (no engine
subprocess) loads and unloads LoRA adapters CYCLES times, a new adapter id each time as
`thrifty serve` does on a hot reload, and prints its RSS every 20 cycles as JSON.

    <vllm engine python> benchmarks/lora_load_engine.py BASE ADAPTERS_DIR CYCLES
"""

import json
import os
import sys
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the loader runs in this process
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import psutil  # noqa: E402
from vllm import LLM  # noqa: E402
from vllm.lora.request import LoRARequest  # noqa: E402

WARMUP_CYCLES = 40


def main() -> None:
    base, adapters_dir, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
    names = sorted(os.listdir(adapters_dir))
    llm = LLM(model=base, max_model_len=512, enforce_eager=True, enable_lora=True,
              max_loras=len(names), max_lora_rank=16, seed=0)
    engine, process = llm.llm_engine, psutil.Process()
    samples = []
    started = time.monotonic()
    for cycle in range(-WARMUP_CYCLES, cycles):
        name = names[cycle % len(names)]
        request = LoRARequest(name, cycle + WARMUP_CYCLES + 1, os.path.join(adapters_dir, name))
        engine.add_lora(request)
        engine.remove_lora(request.lora_int_id)
        if cycle >= 0 and cycle % 20 == 0:
            samples.append({"cycle": cycle, "rss_mib": process.memory_info().rss / 2**20})
    import vllm.lora.lora_model as lora_model
    print(json.dumps({"samples": samples, "seconds": round(time.monotonic() - started, 2),
                      "loader": getattr(lora_model.safetensors.safe_open, "__module__", "?")}))


if __name__ == "__main__":
    main()
