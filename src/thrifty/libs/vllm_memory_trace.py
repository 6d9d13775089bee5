"""Where a vLLM server's memory grows: a vLLM general plugin, off unless the
environment variable THRIFTY_TRACE_MEMORY names a folder (then it runs in every vLLM process).

Each process starts tracemalloc and, every THRIFTY_TRACE_MEMORY_EVERY_S seconds (default 60),
appends one JSON line to FOLDER/<pid>.jsonl: its title (vLLM names its processes, e.g.
"VLLM::EngineCore_DP0"), RSS, glibc's heap (bytes in use, and freed but kept: a heap whose
free part grows is fragmenting, one whose used part grows is leaking), the Python memory
tracemalloc sees and the source lines whose allocations grew most since the first record.
THRIFTY_TRACE_MEMORY_PYTHON=0 leaves tracemalloc off (its snapshots cost seconds and memory of
their own). Tracing costs the server speed; it is for finding a leak, never for a measured run.

It never walks the live objects (gc.get_objects): from a background thread that crashed vLLM's
worker, whose `tuple(generator)` then failed with "SystemError: bad argument to internal
function" (CPython resizes a tuple being built only while it holds the one reference to it).
"""

import os

ENV = "THRIFTY_TRACE_MEMORY"
EVERY_ENV = "THRIFTY_TRACE_MEMORY_EVERY_S"
PYTHON_ENV = "THRIFTY_TRACE_MEMORY_PYTHON"
THREAD = "thrifty-memory-trace"
TOP = 15


def install() -> bool:
    """Start tracing in this process when asked; False (nothing imported) when not."""
    folder = os.environ.get(ENV)
    if not folder:
        return False
    import threading
    import tracemalloc

    if any(t.name == THREAD for t in threading.enumerate()):
        return True  # vLLM ran its plugins twice in this process
    if os.environ.get(PYTHON_ENV, "1") != "0":
        tracemalloc.start(8)
    every_s = float(os.environ.get(EVERY_ENV, "60"))
    threading.Thread(target=_record_forever, args=(folder, every_s), daemon=True,
                     name=THREAD).start()
    return True


def _record_forever(folder: str, every_s: float) -> None:
    import json
    import time
    import tracemalloc

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{os.getpid()}.jsonl")
    started, first = time.monotonic(), None
    while True:
        time.sleep(every_s)
        tracing = tracemalloc.is_tracing()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]) if tracing else None
        first = first or snapshot
        record = {"at_s": round(time.monotonic() - started, 1), "title": _title(),
                  "rss_mib": _rss_mib(), **_glibc_heap()}
        if tracing:
            record["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            record["grown_lines"] = _grown_lines(snapshot, first)
        with open(path, "a") as out:
            out.write(json.dumps(record) + "\n")


def _grown_lines(snapshot, first) -> list[dict]:
    stats = snapshot.compare_to(first, "traceback")
    grown = sorted(stats, key=lambda s: s.size_diff, reverse=True)[:TOP]
    return [{"kib": round(s.size_diff / 1024, 1), "count": s.count_diff,
             "where": [f"{f.filename}:{f.lineno}" for f in s.traceback][-4:]}
            for s in grown if s.size_diff > 0]


def _glibc_heap() -> dict:
    """glibc's mallinfo2: heap bytes in use and freed-but-kept, and bytes in mmapped chunks
    (empty under another allocator, or a libc without mallinfo2)."""
    import ctypes

    fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
              "uordblks", "fordblks", "keepcost")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in fields]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return {"heap_used_mib": round(info.uordblks / 2**20, 1),
            "heap_free_mib": round(info.fordblks / 2**20, 1),
            "mmapped_mib": round(info.hblkhd / 2**20, 1)}


def _title() -> str:
    with open("/proc/self/cmdline", "rb") as cmdline:
        return cmdline.read().split(b"\0")[0].decode(errors="replace")[:80]


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
