"""Samples the server while a load point runs: its /metrics, process memory and GPU memory.

vLLM's Prometheus /metrics gives KV-cache usage, preemptions and queue depth; the memory of
the server processes is sampled when thrifty started them, GPU memory when there is a GPU (per
GPU, totalled over the GPUs the server uses when that is known). Peaks and deltas are kept per
load point.
"""

import threading
import urllib.error
import urllib.request

from thrifty.benchmark import memory

# One scrape of vLLM's /metrics is ~50 KB of text that costs the server ~8 ms of CPU (measured
# on a 2-core CPU machine); once a second keeps that observer cost under 1% of a core.
SAMPLE_EVERY_S = 1.0


def parse_prometheus(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text format -> {sample name: [(labels, value), ...]}.

    Keyed by sample name, not family: a counter's family drops `_total` (and a counter
    sample written without it gets it added), a histogram's samples are `_bucket`, `_sum` and
    `_count`. Malformed text raises ValueError."""
    # Imported here: prometheus_client costs ~75 ms to import, and `thrifty --help` loads
    # this module.
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def _total(samples: dict, *names: str) -> float | None:
    """Sum over label sets of the first metric name present (vLLM renamed some)."""
    for name in names:
        if name in samples:
            return sum(value for _, value in samples[name])
    return None


def vllm_state(samples: dict) -> dict:
    """The figures the report uses from one scrape of vLLM's /metrics."""
    state = {
        "kv_cache_usage_ratio": _total(samples, "vllm:kv_cache_usage_perc",
                                       "vllm:gpu_cache_usage_perc"),
        "preemptions_count": _total(samples, "vllm:num_preemptions_total",
                                    "vllm:num_preemptions"),
        "running_count": _total(samples, "vllm:num_requests_running"),
        "waiting_count": _total(samples, "vllm:num_requests_waiting"),
    }
    for labels, _ in samples.get("vllm:cache_config_info", []):
        blocks, size = labels.get("num_gpu_blocks"), labels.get("block_size")
        if blocks not in (None, "None") and size not in (None, "None"):
            state["kv_cache_tokens"] = int(blocks) * int(size)
    return state


class Monitor:
    """A background sampler; `start()` before a load point, `stop()` after, then `summary()`."""

    def __init__(self, metrics_url: str | None, api_key: str | None = None,
                 server_pid: int | None = None, every_s: float = SAMPLE_EVERY_S,
                 gpu_placement: memory.GpuPlacement | None = None):
        self.metrics_url = metrics_url if every_s > 0 else None
        self.every_s = every_s
        self.api_key = api_key
        self.server_pid = server_pid
        self.gpu_placement = gpu_placement  # None: a server thrifty did not start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        self.kv_peak = None
        self.running_peak = None
        self.waiting_peak = None
        self.preemptions_first = None
        self.preemptions_last = None
        self.rss_peak = None
        self.memory_peak = None  # PSS or USS sum, named by memory_measure
        self.memory_measure = None
        self.gpu_peak: dict[int, dict] = {}
        self.gpu_server: set[int] | None = None  # the server's GPUs (None: not known)
        self.gpu_scope: str | None = None  # how they are known
        self.kv_tokens = None
        self.scrapes = 0

    def scrape(self) -> dict | None:
        if not self.metrics_url:
            return None
        request = urllib.request.Request(self.metrics_url)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:
                return vllm_state(parse_prometheus(response.read().decode()))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def sample(self) -> None:
        state = self.scrape()
        if state:
            self.scrapes += 1
            self.kv_tokens = state.get("kv_cache_tokens", self.kv_tokens)
            self.kv_peak = _max(self.kv_peak, state["kv_cache_usage_ratio"])
            self.running_peak = _max(self.running_peak, state["running_count"])
            self.waiting_peak = _max(self.waiting_peak, state["waiting_count"])
            if state["preemptions_count"] is not None:
                if self.preemptions_first is None:
                    self.preemptions_first = state["preemptions_count"]
                self.preemptions_last = state["preemptions_count"]
        figures = memory.process_tree_memory(self.server_pid) if self.server_pid else None
        self._sample_memory(figures)
        readings = memory.gpu_memory()
        if readings:
            self._sample_gpus(readings, figures["pids"] if figures else None)

    def _sample_gpus(self, readings: list[dict], pids: set[int] | None) -> None:
        for gpu in readings:
            best = self.gpu_peak.get(gpu["index"])
            if best is None or gpu["used_gib"] > best["used_gib"]:
                self.gpu_peak[gpu["index"]] = gpu
        server, self.gpu_scope = memory.server_gpus(readings, self.gpu_placement, pids)
        if server is not None:
            self.gpu_server = (self.gpu_server or set()) | set(server)

    def _sample_memory(self, figures: dict | None) -> None:
        if not figures:
            return
        self.rss_peak = _max(self.rss_peak, figures["rss_bytes"])
        if figures["measure"] is not None:
            self.memory_peak = _max(self.memory_peak, figures["memory_bytes"])
            self.memory_measure = figures["measure"]

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def start(self) -> None:
        self.reset()
        if self.every_s <= 0:
            return  # sampling off
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self.every_s <= 0:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.sample()  # one last look, so counters include the end of the point

    def summary(self) -> dict:
        preempted = (None if self.preemptions_first is None
                     else int(self.preemptions_last - self.preemptions_first))
        return {
            "kv_cache_usage_peak_pct": (round(100 * self.kv_peak, 2)
                                        if self.kv_peak is not None else None),
            "preemptions_count": preempted,
            "running_requests_peak_count": _int(self.running_peak),
            "waiting_requests_peak_count": _int(self.waiting_peak),
            # The RSS sum counts shared pages once per process; PSS (or USS) does not.
            "server_rss_peak_gib": _gib(self.rss_peak),
            "server_memory_peak_gib": _gib(self.memory_peak),
            "server_memory_measure": self.memory_measure,
            # per GPU, and used and total memory of the server's GPUs only
            **memory.gpu_figures(self.gpu_peak, None if self.gpu_server is None
                                 else sorted(self.gpu_server), self.gpu_scope),
            "kv_cache_tokens": self.kv_tokens,
            "metrics_scrapes_count": self.scrapes,
        }


def _max(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _gib(size):
    return round(size / memory.GIB, 3) if size else None


def _int(value):
    return int(value) if value is not None else None
