"""Where a served model's memory goes: weights and the KV-cache pool from vLLM's start-up
report, the server processes' resident memory, and GPU memory through NVML.

vLLM reserves its KV cache up front, so peak GPU memory says nothing about load: the useful
figures are the pool's size (GiB and tokens), the concurrency it allows, and how full it got
(sampled from /metrics by the monitor).
"""

import ctypes
import os
import re
from pathlib import Path

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


def process_tree_rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and all its descendants (vLLM runs an API server, an
    engine core and workers as separate processes). Linux /proc only."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * page
    if pid not in rss:
        return None
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


_nvml = None


def gpu_memory() -> list[dict] | None:
    """Used and total memory of each GPU through NVML (libnvidia-ml, part of the driver);
    None when there is no NVIDIA driver."""
    global _nvml
    try:
        if _nvml is None:
            _nvml = ctypes.CDLL("libnvidia-ml.so.1")
            if _nvml.nvmlInit_v2() != 0:
                raise OSError("nvmlInit failed")
        count = ctypes.c_uint()
        if _nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            info = _NvmlMemory()
            if (_nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0
                    or _nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(info)) != 0):
                continue
            gpus.append({"index": index, "used_gib": round(info.used / GIB, 3),
                         "total_gib": round(info.total / GIB, 3)})
        return gpus or None
    except (OSError, AttributeError):
        return None
