"""thrifty's fixes to vLLM, inside the real vLLM engine: the LoRA loader reads adapters without
the memory safetensors' safe_open keeps per tensor (libs/vllm_lora_load.py)."""

import json
import subprocess

from thrifty.core import engines
from thrifty.core.jobs import engine_pythonpath
from thrifty.serve import demo_adapters

LOADS = """
import gc, json, sys, tracemalloc
import safetensors, torch
from thrifty.libs import vllm_lora_load
path = sys.argv[1]

def with_safe_open():
    with safetensors.safe_open(path, framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}

def with_fix():
    with vllm_lora_load.BytesSafeOpen(path, framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}

def kept_per_load(load):
    for _ in range(5):
        load()
    gc.collect(); tracemalloc.start(); before = tracemalloc.get_traced_memory()[0]
    for _ in range(100):
        load()
    gc.collect(); after = tracemalloc.get_traced_memory()[0]; tracemalloc.stop()
    return (after - before) / 100

a, b = with_safe_open(), with_fix()
import vllm.lora.lora_model as lora_model
installed = vllm_lora_load.install() and vllm_lora_load.install()  # twice: idempotent
print(json.dumps({
    "same": sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype
                                          for k in a),
    "tensors": len(a), "installed": installed,
    "loader_uses_fix": lora_model.safetensors.safe_open is vllm_lora_load.BytesSafeOpen,
    "loader_keeps_the_rest": lora_model.safetensors.torch is safetensors.torch,
    "safe_open_kept_bytes": kept_per_load(with_safe_open),
    "fix_kept_bytes": kept_per_load(with_fix)}))
"""


def test_the_lora_loader_fix_reads_the_same_tensors_and_keeps_no_memory():
    adapters = demo_adapters.trained(demo_adapters.default_dir())
    assert adapters, "the demo adapters are missing: run `thrifty adapters demo`"
    weights = next(iter(adapters.values())) / "adapter_model.safetensors"
    done = subprocess.run([engines.python_for("vllm"), "-c", LOADS, str(weights)],
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": engine_pythonpath(), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"] and result["tensors"] > 100
    assert result["installed"] and result["loader_uses_fix"] and result["loader_keeps_the_rest"]
    assert result["fix_kept_bytes"] < 100  # nothing per load (a few bytes of noise at most)
    # what it fixes, as long as safetensors keeps memory per get_tensor (0.8.0: 56 bytes)
    print("safe_open kept per load:", result["safe_open_kept_bytes"], "bytes")
