"""Engine task of cost: `probe`, the machine's memory bandwidth and matmul rate measured with torch.

Run as `<compress engine python> -m thrifty.cost.worker <job file>`; `thrifty doctor --probe`
runs it and keeps the result in the probe file (formats/probe.py).
"""

import time

from thrifty.core.jobs import Events, worker_main


def probe(params: dict, events: Events) -> dict:
    """Measure this machine's memory bandwidth and matmul rate with torch (CPU, or GPU 0).

    Bandwidth: the best of several copies of a large tensor (each reads and writes it once).
    Matmul rate: the best of several square bf16 (and fp32) matrix products, 2n^3 FLOPs each.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() and not params.get("cpu") else "cpu"
    size_mib = params.get("copy_mib", 2048 if device == "cuda" else 512)
    n = params.get("matmul_n", 8192 if device == "cuda" else 2048)
    repeats = params.get("repeats", 10)

    def best_seconds(work) -> float:
        work()  # warm-up
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            work()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return min(times)

    events.progress("probe", 0, 3, "steps")
    buffers = [torch.empty(size_mib * 2**20, dtype=torch.uint8, device=device).fill_(1)]
    buffers.append(torch.empty_like(buffers[0]))
    copy_s = best_seconds(lambda: buffers[1].copy_(buffers[0]))
    buffers.clear()
    events.progress("probe", 1, 3, "steps")
    rates, sizes = {}, {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        sizes[name] = _matmul_size(torch, dtype, device, n)
        a = torch.randn(sizes[name], sizes[name], device=device).to(dtype)
        b = torch.randn(sizes[name], sizes[name], device=device).to(dtype)
        rates[name] = 2 * sizes[name]**3 / best_seconds(lambda a=a, b=b: a @ b) / 1e12
        events.progress("probe", 2 if name == "bf16" else 3, 3, "steps")
    return {"device": device,
            "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "bandwidth_gb_per_s": round(2 * size_mib * 2**20 / copy_s / 1e9, 2),
            "bf16_tflop_per_s": round(rates["bf16"], 4),
            "fp32_tflop_per_s": round(rates["fp32"], 4),
            "copy_mib": size_mib, "matmul_n": sizes, "repeats": repeats}


def _matmul_size(torch, dtype, device: str, largest: int, target_s: float = 0.1) -> int:
    """The smallest power-of-two matrix size (from 256, at most `largest`) whose product takes
    `target_s`: a CPU without native bf16 (AVX2 only) multiplies bf16 hundreds of times slower
    than fp32, and a fixed 2048 x 2048 product there took minutes per repetition."""
    size = 256
    while size < largest:
        a = torch.randn(size, size, device=device).to(dtype)
        a @ a  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        if time.perf_counter() - started >= target_s:
            break
        size *= 2
    return size


TASKS = {"probe": probe}

if __name__ == "__main__":
    worker_main(TASKS)
