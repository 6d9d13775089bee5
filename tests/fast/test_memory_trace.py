"""The memory-trace plugin (thrifty.libs.vllm_memory_trace) in a process that leaks."""

import json
import subprocess
import sys

LEAKY = """
import time
from thrifty.libs import vllm_memory_trace

assert vllm_memory_trace.install()
class Leaky:
    pass

kept = []
deadline = time.monotonic() + 4
while time.monotonic() < deadline:
    kept.extend(Leaky() for _ in range(100))  # grows on this line
    time.sleep(0.02)
"""


def test_a_growing_type_and_its_line_are_named(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    env = {"THRIFTY_TRACE_MEMORY": str(tmp_path / "trace"), "THRIFTY_TRACE_MEMORY_EVERY_S": "0.5",
           "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=60)
    [trace] = (tmp_path / "trace").iterdir()
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(records) >= 2
    last = records[-1]
    assert last["rss_mib"] > 0
    assert last["heap_used_mib"] > 0  # glibc's heap (this machine's libc)
    growing = next(n for n, text in enumerate(LEAKY.splitlines(), 1) if "grows on" in text)
    frames = [frame for line in last["grown_lines"] for frame in line["where"]]
    assert f"{script}:{growing}" in frames


def test_without_tracemalloc_it_still_reads_the_heap(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    env = {"THRIFTY_TRACE_MEMORY": str(tmp_path / "trace"), "THRIFTY_TRACE_MEMORY_EVERY_S": "0.5",
           "THRIFTY_TRACE_MEMORY_PYTHON": "0", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=60)
    [trace] = (tmp_path / "trace").iterdir()
    last = json.loads(trace.read_text().splitlines()[-1])
    assert last["heap_used_mib"] > 0 and "grown_lines" not in last


def test_it_does_nothing_unless_asked(monkeypatch):
    from thrifty.libs import vllm_memory_trace

    monkeypatch.delenv("THRIFTY_TRACE_MEMORY", raising=False)
    assert vllm_memory_trace.install() is False
