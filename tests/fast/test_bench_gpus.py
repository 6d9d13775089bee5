"""GPU memory in `thrifty bench`: NVML's readings of each GPU, which of them the server uses,
and the used and total memory of those GPUs only. NVML is a made-up machine here (a fake
pynvml module): the logic under it is what is tested."""

import os
import sys
import types
from pathlib import Path

import pytest

from thrifty.benchmark import memory, monitor
from thrifty.benchmark import run as runner
from thrifty.benchmark.memory import GpuPlacement

GIB = 2**30
OTHER_JOB = 2**22 + 4321  # a process id that is not the server's


class _NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict] = (), init_fails: bool = False):
    """pynvml on a made-up machine, one dict per GPU: "used" and "total" GiB, "pids" of its
    compute processes (None: NVML cannot list them), "lost" (unreadable)."""
    def init():
        if init_fails:
            raise _NVMLError("NVML Shared Library Not Found")

    def handle(index):
        if gpus[index].get("lost"):
            raise _NVMLError("GPU is lost")
        return index

    def info(index):
        gpu = gpus[index]
        return types.SimpleNamespace(used=gpu["used"] * GIB, total=gpu.get("total", 80) * GIB,
                                     free=(gpu.get("total", 80) - gpu["used"]) * GIB)

    def uuid(index):
        text = f"GPU-{index}{index}{index}{index}aaaa-bbbb"
        return text.encode() if index == 0 else text  # older nvidia-ml-py answers bytes

    def processes(index):
        pids = gpus[index].get("pids", [])
        if pids is None:
            raise _NVMLError("Not Supported")
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=GIB) for pid in pids]

    return types.SimpleNamespace(
        NVMLError=_NVMLError, nvmlInit=init, nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=handle, nvmlDeviceGetMemoryInfo=info,
        nvmlDeviceGetUUID=uuid, nvmlDeviceGetComputeRunningProcesses=processes)


@pytest.fixture
def machine(monkeypatch):
    """Install a made-up machine's NVML."""
    def install(gpus: list[dict]):
        monkeypatch.setattr(memory, "_nvml_ready", None)
        monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpus))
    return install


@pytest.mark.parametrize("module", [None, fake_pynvml(init_fails=True), fake_pynvml([])])
def test_gpu_memory_without_a_driver_or_gpu_is_none(monkeypatch, module):
    monkeypatch.setattr(memory, "_nvml_ready", None)
    monkeypatch.setitem(sys.modules, "pynvml", module)  # None: the import fails
    assert memory.gpu_memory() is None


def test_gpu_memory_reads_each_gpu_and_skips_a_lost_one(machine):
    machine([{"used": 1, "pids": [11, 12, 11]}, {"used": 2, "lost": True},
             {"used": 3, "total": 40, "pids": None}])
    assert memory.gpu_memory() == [
        {"index": 0, "uuid": "GPU-0000aaaa-bbbb", "used_gib": 1.0, "total_gib": 80.0,
         "pids": [11, 12]},
        {"index": 2, "uuid": "GPU-2222aaaa-bbbb", "used_gib": 3.0, "total_gib": 40.0,
         "pids": None}]


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_gpu_memory_with_the_real_library_and_no_driver(monkeypatch):
    monkeypatch.setattr(memory, "_nvml_ready", None)
    assert memory.gpu_memory() is None
    assert memory.gpu_memory() is None  # the failed start is remembered, not retried


# A host of four 80 GiB GPUs: another job fills GPU 0, the server (this test's process, as
# thrifty started it) shards over GPUs 1 and 2, GPU 3 is idle.
HOST = [{"used": 70, "pids": [OTHER_JOB]}, {"used": 60, "pids": [os.getpid()]},
        {"used": 61.5, "pids": [os.getpid()]}, {"used": 0.5, "pids": []}]


def sampled(placement: GpuPlacement | None, server_pid: int | None) -> dict:
    watcher = monitor.Monitor(None, server_pid=server_pid, gpu_placement=placement)
    watcher.sample()
    return watcher.summary()


def test_only_the_servers_gpus_are_totalled(machine):
    machine(HOST)
    summary = sampled(GpuPlacement(on_gpu=True, tensor_parallel=2), os.getpid())
    assert summary["gpu_memory_peak_gib"] == 121.5  # GPUs 1 and 2, not the whole host
    assert summary["gpu_total_gib"] == 160.0
    assert [(g["index"], g["used_peak_gib"], g["total_gib"], g["server"])
            for g in summary["gpus"]] == [(0, 70.0, 80.0, False), (1, 60.0, 80.0, True),
                                          (2, 61.5, 80.0, True), (3, 0.5, 80.0, False)]
    assert "NVML lists the server's processes" in summary["gpu_scope"]
    point = {"server": summary}
    bench_memory = runner.memory_summary(runner.Target("http://x/v1", "m"), [point])
    assert (bench_memory["gpu_memory_peak_gib"], bench_memory["gpu_total_gib"]) == (121.5, 160.0)
    assert bench_memory["gpus"] == summary["gpus"]


def test_a_server_thrifty_did_not_start_gets_no_gpu_totals(machine):
    """--url: the server may not even run on this machine; its GPUs are not guessed."""
    machine(HOST)
    summary = sampled(None, None)
    assert summary["gpu_memory_peak_gib"] is None and summary["gpu_total_gib"] is None
    assert [g["server"] for g in summary["gpus"]] == [None] * 4
    assert summary["gpu_scope"].startswith("unknown: thrifty did not start the server")


def test_no_gpu_no_gpu_figures(machine):
    machine([])
    summary = sampled(GpuPlacement(on_gpu=False), os.getpid())
    assert (summary["gpus"], summary["gpu_scope"], summary["gpu_total_gib"]) == ([], None, None)


# NVML's process ids are the host's; inside a container the server's own ids differ, so
# NVML lists none of them and the server's CUDA_VISIBLE_DEVICES decides.
IN_A_CONTAINER = [{"index": i, "uuid": f"GPU-{i}{i}{i}{i}aaaa-bbbb", "used_gib": 1.0,
                   "total_gib": 80.0, "pids": [OTHER_JOB + i]} for i in range(4)]


@pytest.mark.parametrize("placement, gpus, scope", [
    (GpuPlacement(True), [0], "CUDA_VISIBLE_DEVICES not set, tensor parallel 1"),
    (GpuPlacement(True, None, 2), [0, 1], "first 2 GPU(s)"),
    (GpuPlacement(True, "2,3", 2), [2, 3], "CUDA_VISIBLE_DEVICES=2,3"),
    (GpuPlacement(True, "3,1"), [3], "tensor parallel 1"),
    (GpuPlacement(True, "GPU-2222", 1), [2], "GPU-2222"),
    (GpuPlacement(True, "1,7,2", 3), [1], "first 1 GPU(s)"),  # CUDA stops at device 7
    (GpuPlacement(True, ""), [], "none: the server sees no GPU"),
    (GpuPlacement(True, "MIG-4f1c2b9a"), None, "unknown: CUDA_VISIBLE_DEVICES=MIG-4f1c2b9a"),
    (GpuPlacement(False, "0"), [], "none: the server runs on the CPU"),
])
def test_server_gpus_from_its_visible_devices(placement, gpus, scope):
    found, how = memory.server_gpus(IN_A_CONTAINER, placement, {os.getpid()})
    assert found == gpus
    assert scope in how


def test_nvml_process_list_wins_over_visible_devices():
    readings = [dict(gpu) for gpu in IN_A_CONTAINER]
    readings[3]["pids"] = [OTHER_JOB, 4242]
    found, how = memory.server_gpus(readings, GpuPlacement(True, "0"), {4242, 4243})
    assert (found, how) == ([3], "the GPUs where NVML lists the server's processes")
