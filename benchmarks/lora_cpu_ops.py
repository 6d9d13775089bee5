"""Where multi-LoRA throughput goes on a CPU: vLLM's torch-native LoRA ops against the base
layer's own matmul, for SmolLM2-135M's projection shapes.

Runs inside the vllm engine (it imports vLLM's ops), from the repository root, with thrifty's
source on the path for the run fingerprint (benchmarks/common.py):
  PYTHONPATH=src ~/.cache/thrifty/engines/vllm/bin/python benchmarks/lora_cpu_ops.py
Writes benchmarks/results/lora_cpu_ops.json and prints a table. For each token count (a
prefill batch of 4 x 128 tokens, and a decode step of 4 tokens) and padded rank, it times the
seven projections of one block: base matmul, and LoRA shrink + expand (bgmv, which vLLM's
CPU punica wrapper also uses for prefill after repeating each sequence's adapter index per
token) with the tokens spread over two adapters.
"""

import json
import time
from pathlib import Path

import torch
from common import fingerprint
from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_shrink

HIDDEN, INTERMEDIATE, KV = 576, 1536, 192
PROJECTIONS = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, KV), "v": (HIDDEN, KV), "o": (HIDDEN, HIDDEN),
               "gate": (HIDDEN, INTERMEDIATE), "up": (HIDDEN, INTERMEDIATE),
               "down": (INTERMEDIATE, HIDDEN)}  # name -> (input width, output width)
DTYPE = torch.bfloat16
RESULTS = Path(__file__).resolve().parent / "results"


def timed(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def block_times(tokens: int, rank: int, slots: int = 2, repeats: int = 20) -> dict:
    base_s = lora_s = 0.0
    indices = torch.arange(tokens) % slots  # tokens alternate between two adapters
    for in_width, out_width in PROJECTIONS.values():
        x = torch.randn(tokens, in_width, dtype=DTYPE)
        weight = torch.randn(out_width, in_width, dtype=DTYPE)
        lora_a = torch.randn(slots, 1, rank, in_width, dtype=DTYPE)
        lora_b = torch.randn(slots, 1, out_width, rank, dtype=DTYPE)
        y = torch.zeros(tokens, out_width, dtype=DTYPE)
        shrunk = torch.zeros(tokens, rank, dtype=torch.float32)
        base_s += timed(lambda x=x, weight=weight: torch.nn.functional.linear(x, weight), repeats)

        def lora(x=x, lora_a=lora_a, lora_b=lora_b, y=y, shrunk=shrunk):
            bgmv_shrink(x, lora_a, shrunk, indices, 1.0)
            bgmv_expand(shrunk, lora_b, y, indices, add_inputs=True)

        lora_s += timed(lora, repeats)
    return {"tokens": tokens, "rank": rank, "base_ms": round(base_s * 1000, 3),
            "lora_ms": round(lora_s * 1000, 3), "lora_over_base_ratio": round(lora_s / base_s, 3)}


def main() -> None:
    torch.manual_seed(0)
    rows = [block_times(tokens, rank) for tokens in (512, 4) for rank in (8, 16)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lora_cpu_ops.json").write_text(json.dumps(
        {"benchmark": "lora_cpu_ops", "torch_threads": torch.get_num_threads(),
         "dtype": str(DTYPE), "rows": rows, "fingerprint": fingerprint()}, indent=2) + "\n")
    print("tokens  rank  base ms  LoRA ms  LoRA/base")
    for row in rows:
        print(f"{row['tokens']:>6}  {row['rank']:>4}  {row['base_ms']:>7}  {row['lora_ms']:>7}  "
              f"{row['lora_over_base_ratio']:>9}")


if __name__ == "__main__":
    main()
