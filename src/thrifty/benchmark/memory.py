"""Where a served model's memory goes: weights, KV-cache pool, server processes and GPUs.

Weights and the KV-cache pool come from vLLM's start-up report, the server processes' memory
from psutil (PSS or USS, and the RSS sum), and GPU memory from NVML (nvidia-ml-py).

vLLM reserves its KV cache up front, so peak GPU memory says nothing about load: the useful
figures are the pool's size (GiB and tokens), the concurrency it allows, and how full it got
(sampled from /metrics by the monitor).
"""

import re

GIB = 1024 ** 3

# vLLM's start-up log lines (GPU and CPU wording both); the numbers are GiB unless named.
_LOG_PATTERNS = {
    "weights_gib": [r"Model loading took ([\d.]+) GiB", r"Checkpoint size: ([\d.]+) GiB"],
    "kv_cache_gib": [r"Available KV cache memory: ([\d.]+) GiB",
                     r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache"],
    "kv_cache_tokens": [r"KV cache size: ([\d,]+) tokens"],
    "max_concurrency_ratio": [r"Maximum concurrency for [\d,]+ tokens per request: ([\d.]+)x"],
    "max_model_len_tokens": [r"Maximum concurrency for ([\d,]+) tokens per request"],
}


def parse_startup_log(text: str) -> dict:
    """The memory figures vLLM reports while starting (absent ones are left out)."""
    found = {}
    for key, patterns in _LOG_PATTERNS.items():
        for pattern in patterns:
            match = re.search(pattern, text)
            if match:
                value = float(match.group(1).replace(",", ""))
                found[key] = int(value) if key.endswith("_tokens") else value
                break
    return found


def process_tree_memory(pid: int) -> dict | None:
    """Memory of a process and all its descendants (vLLM runs an API server, an engine core
    and workers as separate processes), through psutil; None when the process is gone.

    `rss_bytes` sums each process's resident set, so pages the processes share (libraries,
    fork copy-on-write, shared memory) count once per process. `memory_bytes` sums PSS
    (shared pages split among their sharers), or USS (private pages only) where the OS gives
    no PSS; `measure` names which ("pss" or "uss"), both None when the OS denies either."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss, figures = 0, []
    for process in tree:
        try:
            rss += process.memory_info().rss
        except psutil.Error:
            continue  # ended while we looked
        try:
            figures.append(process.memory_full_info())
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            figures.append(None)  # access denied: no USS or PSS for this one
    measure = next((name for name in ("pss", "uss")
                    if figures and all(hasattr(f, name) for f in figures)), None)
    used = sum(getattr(f, measure) for f in figures) if measure else None
    return {"rss_bytes": rss, "memory_bytes": used, "measure": measure}


_nvml_ready: bool | None = None  # None until the first try; False when there is no driver


def gpu_memory() -> list[dict] | None:
    """Used and total memory of each GPU through NVML (nvidia-ml-py over libnvidia-ml, part
    of the driver); None when there is no NVIDIA driver or no GPU."""
    global _nvml_ready
    try:
        import pynvml
    except ImportError:
        return None
    if _nvml_ready is None:
        try:
            pynvml.nvmlInit()
            _nvml_ready = True
        except pynvml.NVMLError:
            _nvml_ready = False
    if not _nvml_ready:
        return None
    gpus = []
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        return None
    for index in range(count):
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        except pynvml.NVMLError:
            continue
        gpus.append({"index": index, "used_gib": round(info.used / GIB, 3),
                     "total_gib": round(info.total / GIB, 3)})
    return gpus or None
