"""Engine tasks of `thrifty bench`: `latency`, offline batch latency in the vLLM engine
(benchmark/latency.py).

Run as `<vllm engine python> -m thrifty.benchmark.worker <job file>`. The `__main__` guard
matters: vLLM's offline engine spawns worker processes that re-import the main module.
"""

from thrifty.benchmark.latency import latency
from thrifty.core.jobs import worker_main

TASKS = {"latency": latency}

if __name__ == "__main__":
    worker_main(TASKS)
