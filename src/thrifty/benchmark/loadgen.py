"""The load generator: streams completions at a fixed concurrency (closed loop) or a fixed
arrival rate (open loop: constant or Poisson), timing every chunk.

Each worker thread keeps one HTTP/1.1 keep-alive connection (as aiohttp does for `vllm bench
serve`) and parses the server-sent events itself, so the client adds well under a millisecond
to a request's time to first token (measured in benchmarks/client_capacity.py). A server that
answers with an error or drops the connection mid-stream produces a failed record; nothing is
retried and nothing is hidden.
"""

import http.client
import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from thrifty.benchmark.metrics import RequestRecord
from thrifty.benchmark.workload import Prompt
from thrifty.core.openai_client import error_text

JOIN_POLL_S = 0.2  # how often the main thread wakes up (so Ctrl-C is seen promptly)


@dataclass
class Job:
    model: str
    adapter: str
    prompt: Prompt


@dataclass
class Profile:
    """One load point: `concurrency` requests in flight (closed loop), or `rate` requests per
    second arriving at constant or Poisson intervals (open loop, optionally capped at
    `concurrency` in flight)."""
    kind: str  # "concurrency", "constant" or "poisson"
    load: float  # the concurrency or the rate
    concurrency: int | None = None  # the cap on in-flight requests for the open loop

    @property
    def label(self) -> str:
        if self.kind == "concurrency":
            return f"concurrency {int(self.load)}"
        return f"{self.kind} {self.load:g} req/s"


class Connection:
    """One keep-alive connection to the server, reopened after any failure."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.path = parts.path.rstrip("/").removesuffix("/v1") + "/v1/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout_s)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _send(self, body: bytes) -> http.client.HTTPResponse:
        """POST on the kept-alive connection; a server may close an idle keep-alive connection
        at any time, so a reused one that fails before any answer is retried once, fresh."""
        reused = self.conn is not None
        try:
            conn = self._open()
            conn.request("POST", self.path, body=body, headers=self.headers)
            return conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        conn = self._open()
        conn.request("POST", self.path, body=body, headers=self.headers)
        return conn.getresponse()

    def stream(self, body: bytes, record: RequestRecord, clock: Callable[[], float]) -> None:
        """Send one streamed completion and fill `record` with its timeline."""
        chunks = 0
        started = clock()
        record.started_s = started
        try:
            response = self._send(body)
            if response.status != 200:
                record.error = f"HTTP {response.status}: {error_text(response.read())[:300]}"
                record.e2e_s = clock() - started
                return
            last, done = started, False
            while True:
                line = response.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    response.read()  # the chunked body's end, so the connection can be reused
                    break
                data = json.loads(payload)
                if data.get("choices"):
                    now = clock()
                    if chunks == 0:
                        record.ttft_s = now - started
                    else:
                        record.itl_s.append(now - last)
                    last = now
                    chunks += 1
                if usage := data.get("usage"):
                    record.output_tokens = usage.get("completion_tokens") or 0
                    if usage.get("prompt_tokens") is not None:
                        record.input_tokens = usage["prompt_tokens"]
            record.e2e_s = clock() - started
            if not done:
                record.error = (f"the server closed the stream after {chunks} chunks without "
                                "finishing it")
                self.close()
                return
            if chunks == 0:
                record.error = "the stream carried no tokens"
                return
            if not record.output_tokens:
                record.output_tokens = chunks  # a server that does not report usage
            record.ok = True
        except (http.client.HTTPException, OSError, ValueError) as exc:
            record.e2e_s = clock() - started
            what = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            record.error = f"connection failed after {chunks} chunks ({what})"
            self.close()


def request_body(job: Job, ignore_eos: bool) -> bytes:
    body = {"model": job.model, "prompt": job.prompt.text, "max_tokens": job.prompt.output_tokens,
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's extension: every request produces max_tokens
    return json.dumps(body).encode()


class LoadRun:
    """Runs load points one after another against one server; collects records as they
    finish, so an interrupted run keeps everything completed so far."""

    def __init__(self, url: str, api_key: str | None, ignore_eos: bool = True,
                 timeout_s: float = 600.0, on_done: Callable[[RequestRecord], None] | None = None):
        self.url = url
        self.api_key = api_key
        self.ignore_eos = ignore_eos
        self.timeout_s = timeout_s
        self.on_done = on_done or (lambda record: None)
        self.records: list[RequestRecord] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._origin = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self._origin

    def run_point(self, point: int, profile: Profile, jobs: list[Job], seed: int,
                  duration_s: float | None = None, record: bool = True) -> None:
        """Send `jobs` (cycled until `duration_s` when given) under `profile`."""
        deadline = self.clock() + duration_s if duration_s else None
        feed = _JobFeed(jobs, cycle=duration_s is not None)
        if profile.kind == "concurrency":
            workers = int(profile.load)
            todo: queue.Queue | None = None
        else:
            workers = profile.concurrency or min(len(jobs) if not duration_s else 512, 512)
            todo = queue.Queue()
        threads = [threading.Thread(target=self._worker, daemon=True,
                                    args=(point, feed, todo, deadline, record))
                   for _ in range(max(1, workers))]
        for thread in threads:
            thread.start()
        try:
            if todo is not None:
                self._schedule(profile, feed, todo, deadline, seed, len(threads))
            for thread in threads:
                while thread.is_alive():
                    thread.join(JOIN_POLL_S)  # wakes up for Ctrl-C in the main thread
        except BaseException:
            self.stop.set()  # workers send nothing more; finished requests stay recorded
            raise

    def _schedule(self, profile: Profile, feed: "_JobFeed", todo: queue.Queue,
                  deadline: float | None, seed: int, workers: int) -> None:
        """Open loop: put each job on the queue at its arrival time."""
        rng = random.Random(seed)
        next_at = self.clock()
        while not self.stop.is_set():
            job = feed.next()
            if job is None or (deadline is not None and next_at >= deadline):
                break
            wait = next_at - self.clock()
            if wait > 0:
                # sleep most of the wait, then spin: time.sleep alone overshoots by ~0.1 ms
                if wait > 0.002:
                    self.stop.wait(wait - 0.001)
                while self.clock() < next_at:
                    pass
            todo.put((job, next_at))
            gap = 1.0 / profile.load
            next_at += rng.expovariate(profile.load) if profile.kind == "poisson" else gap
        for _ in range(workers):
            todo.put(None)

    def _worker(self, point: int, feed: "_JobFeed", todo: queue.Queue | None,
                deadline: float | None, keep: bool) -> None:
        connection = Connection(self.url, self.api_key, self.timeout_s)
        try:
            while not self.stop.is_set():
                if todo is None:
                    if deadline is not None and self.clock() >= deadline:
                        return
                    job, scheduled = feed.next(), None
                else:
                    item = todo.get()
                    if item is None:
                        return
                    job, scheduled = item
                if job is None:
                    return
                result = RequestRecord(point=point, model=job.model, adapter=job.adapter,
                                       started_s=0.0, scheduled_s=scheduled)
                connection.stream(request_body(job, self.ignore_eos), result, self.clock)
                if result.input_tokens is None:
                    result.input_tokens = job.prompt.input_tokens
                if keep and not self.stop.is_set():
                    with self._lock:
                        self.records.append(result)
                    self.on_done(result)
        finally:
            connection.close()


class _JobFeed:
    """Hands out jobs to worker threads in order, once or cycling."""

    def __init__(self, jobs: list[Job], cycle: bool):
        self.jobs = jobs
        self.cycle = cycle
        self.index = 0
        self.lock = threading.Lock()

    def next(self) -> Job | None:
        with self.lock:
            if not self.jobs or (self.index >= len(self.jobs) and not self.cycle):
                return None
            job = self.jobs[self.index % len(self.jobs)]
            self.index += 1
            return job
