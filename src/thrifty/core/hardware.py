"""What hardware this machine has: CPU cores, RAM, NVIDIA GPUs (through nvidia-smi)."""

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_gib: float
    driver: str


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def memory_gib() -> dict[str, float]:
    """Total and available RAM in GiB, from /proc/meminfo (0 where unknown)."""
    fields = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return {"total_gib": 0.0, "available_gib": 0.0}
    gib = 1024**3
    return {
        "total_gib": round(fields.get("MemTotal", 0) / gib, 2),
        "available_gib": round(fields.get("MemAvailable", 0) / gib, 2),
    }


@functools.cache  # nvidia-smi takes a while; the GPUs do not change while thrifty runs
def gpus() -> tuple[Gpu, ...]:
    """NVIDIA GPUs seen by nvidia-smi; empty when there is none or no driver."""
    if not shutil.which("nvidia-smi"):
        return ()
    query = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version",
             "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            index, name, mem_mib, driver = parts
            found.append(Gpu(int(index), name, round(float(mem_mib) / 1024, 1), driver))
    return tuple(found)


@functools.cache
def gpu_compute_capabilities() -> tuple[float, ...]:
    """Each NVIDIA GPU's compute capability (8.9 for an L4, 9.0 for an H100); empty without one."""
    if not gpus():
        return ()
    query = ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=15, check=True).stdout
        return tuple(float(line) for line in out.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo ("avx512f", "amx_tile"...); empty if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def accelerator() -> str:
    """'cuda' when an NVIDIA GPU is present, else 'cpu'; THRIFTY_ACCELERATOR overrides."""
    forced = os.environ.get("THRIFTY_ACCELERATOR")
    if forced in ("cpu", "cuda"):
        return forced
    return "cuda" if gpus() else "cpu"


def describe() -> dict:
    """A JSON-ready description of the machine, for doctor and run records."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_cores": cpu_cores(),
        **{f"ram_{k}": v for k, v in memory_gib().items()},
        "gpus": [asdict(g) for g in gpus()],
        "accelerator": accelerator(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_name(described: dict | None = None) -> str:
    """The first GPU's name, or the CPU model and its cores."""
    hw = described or describe()
    if hw["gpus"]:
        return hw["gpus"][0]["name"]
    return f"{hw['cpu_model']} ({hw['cpu_cores']} cores)"
