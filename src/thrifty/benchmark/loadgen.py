"""The load generator: streams completions at a fixed concurrency (closed loop) or a fixed
arrival rate (open loop: constant or Poisson), timing every chunk.

Each worker thread keeps one HTTP/1.1 keep-alive connection (as aiohttp does for `vllm bench
serve`): a socket-level thrifty.formats.openai_api.StreamConnection, whose one parser of the
server-sent events ServerClient.stream uses too. The client adds well under a millisecond to
a request's time to first token (measured in benchmarks/client_capacity.py). A server that
answers with an error or drops the connection mid-stream produces a failed record, never
retried; the one retry is of a send on a kept-alive connection the server had already closed.

vLLM caches prompt prefixes, so a prompt sent again would skip most of its prefill. Given a
run's cache salt, every request carries vLLM's `cache_salt` (one per load point and per pass
over the prompts): no point, and no pass of a `--duration` point, is served from the cache
of another.
"""

import contextlib
import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from thrifty.benchmark.metrics import RequestRecord
from thrifty.benchmark.workload import Prompt
from thrifty.formats.openai_api import CompletionStream, StreamConnection

JOIN_POLL_S = 0.2  # how often the main thread wakes up (so Ctrl-C is seen promptly)


@dataclass
class Job:
    model: str
    adapter: str
    prompt: Prompt
    cache_salt: str | None = None  # vLLM's prefix-cache namespace for this request


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


def request_body(job: Job, ignore_eos: bool) -> bytes:
    body = {"model": job.model, "prompt": job.prompt.text, "max_tokens": job.prompt.output_tokens,
            "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM's extension: every request produces max_tokens
    if job.cache_salt:
        body["cache_salt"] = job.cache_salt  # vLLM's extension: a prefix cache of its own
    return json.dumps(body).encode()


class LoadRun:
    """Runs load points one after another against one server; collects records as they
    finish, so an interrupted run keeps everything completed so far."""

    def __init__(self, url: str, api_key: str | None, ignore_eos: bool = True,
                 timeout_s: float = 600.0, on_done: Callable[[RequestRecord], None] | None = None,
                 cache_salt: str | None = None):
        self.url = url
        self.api_key = api_key
        self.ignore_eos = ignore_eos
        self.cache_salt = cache_salt  # the run's; None sends no salt
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
        salt = self.cache_salt and f"{self.cache_salt}-{'w' if point < 0 else point}"
        feed = _JobFeed(jobs, cycle=duration_s is not None, salt=salt)
        pool = _WorkerPool(self, point, record)
        try:
            if profile.kind == "concurrency":
                # N users that start together: each connects, then all send at once (as
                # `vllm bench serve` does). A staggered start would settle into a different
                # batching rhythm (prefills beside decodes: lower TTFT, higher TPOT).
                together = threading.Barrier(int(profile.load))
                for _ in range(int(profile.load)):
                    pool.spawn(lambda: self._closed_loop_job(feed, deadline), start=together)
            else:
                self._schedule(profile, feed, pool, deadline, seed)
            pool.join()  # wakes up every JOIN_POLL_S, so Ctrl-C is seen promptly
        except BaseException:
            self.stop.set()  # workers send nothing more; finished requests stay recorded
            raise

    def _closed_loop_job(self, feed: "_JobFeed", deadline: float | None):
        if self.stop.is_set() or (deadline is not None and self.clock() >= deadline):
            return None
        job = feed.next()
        return None if job is None else (job, None)

    def _schedule(self, profile: Profile, feed: "_JobFeed", pool: "_WorkerPool",
                  deadline: float | None, seed: int) -> None:
        """Open loop: hand each job to an idle worker at its arrival time (starting a new
        worker only when none is idle, up to the concurrency cap). The schedule is absolute,
        so a late wake-up never shifts the arrivals after it."""
        rng = random.Random(seed)
        cap = profile.concurrency or 100_000
        next_at = self.clock()
        while not self.stop.is_set():
            job = feed.next()
            if job is None or (deadline is not None and next_at >= deadline):
                break
            wait = next_at - self.clock()
            if wait > 0 and self.stop.wait(wait):
                break
            pool.submit((job, next_at), cap)
            next_at += (rng.expovariate(profile.load) if profile.kind == "poisson"
                        else 1.0 / profile.load)
        pool.close()

    def send(self, connection: StreamConnection, point: int, job: Job,
             scheduled: float | None, keep: bool) -> None:
        stream = connection.stream(request_body(job, self.ignore_eos), self.clock)
        result = as_record(stream, point, job, scheduled)
        if self.stop.is_set():
            return  # finished after Ctrl-C: not part of the kept results
        if keep:
            with self._lock:
                self.records.append(result)
        self.on_done(result)


def as_record(stream: CompletionStream, point: int, job: Job,
              scheduled: float | None) -> RequestRecord:
    """A request's timeline (on the run's clock) from its parsed stream."""
    return RequestRecord(
        point=point, model=job.model, adapter=job.adapter, started_s=stream.started_s,
        ok=stream.ok, error=stream.error, error_kind=stream.error_kind,
        input_tokens=(stream.input_tokens if stream.input_tokens is not None
                      else job.prompt.input_tokens),
        output_tokens=stream.output_tokens or 0, ttft_s=stream.ttft_s, e2e_s=stream.e2e_s,
        itl_s=stream.itl_s, scheduled_s=scheduled)


class _WorkerPool:
    """Worker threads, each with its own kept-alive connection. Closed loop: each worker pulls
    its next job itself. Open loop: the scheduler hands a job to an idle worker, or starts a
    new one, so threads and connections stay near the peak number of requests in flight."""

    def __init__(self, run: LoadRun, point: int, keep: bool):
        self.run = run
        self.point = point
        self.keep = keep
        self.threads: list[threading.Thread] = []
        self.todo: queue.SimpleQueue = queue.SimpleQueue()
        self.idle = 0  # open-loop workers waiting for a job
        self.lock = threading.Condition()

    def spawn(self, next_job, queued: bool = False,
              start: threading.Barrier | None = None) -> None:
        thread = threading.Thread(target=self._work, args=(next_job, queued, start),
                                  daemon=True)
        self.threads.append(thread)
        thread.start()

    def submit(self, item, cap: int) -> None:
        with self.lock:
            while self.idle == 0 and len(self.threads) >= cap and not self.run.stop.is_set():
                self.lock.wait(JOIN_POLL_S)  # at the cap: the arrival waits for a free worker
            if self.idle > 0:
                self.idle -= 1
            else:
                self.spawn(self.todo.get, queued=True)
        self.todo.put(item)

    def close(self) -> None:
        for _ in self.threads:
            self.todo.put(None)

    def _work(self, next_job, queued: bool, start: threading.Barrier | None) -> None:
        connection = StreamConnection(self.run.url, self.run.api_key, self.run.timeout_s)
        try:
            if start is not None:
                with contextlib.suppress(OSError):  # a failed connect fails the first request
                    connection.connect()
                with contextlib.suppress(threading.BrokenBarrierError):
                    start.wait(timeout=60)
            while not self.run.stop.is_set():
                item = next_job()
                if item is None:
                    return
                job, scheduled = item
                self.run.send(connection, self.point, job, scheduled, self.keep)
                if queued:
                    with self.lock:
                        self.idle += 1
                        self.lock.notify()
        finally:
            connection.close()

    def join(self) -> None:
        for thread in list(self.threads):
            while thread.is_alive():
                thread.join(JOIN_POLL_S)


class _JobFeed:
    """Hands out jobs to worker threads in order, once or cycling; with a salt, each pass over
    the jobs gets its own cache salt (salt-0, salt-1, ...)."""

    def __init__(self, jobs: list[Job], cycle: bool, salt: str | None = None):
        self.jobs = jobs
        self.cycle = cycle
        self.salt = salt
        self.index = 0
        self.lock = threading.Lock()

    def next(self) -> Job | None:
        with self.lock:
            if not self.jobs or (self.index >= len(self.jobs) and not self.cycle):
                return None
            passes, position = divmod(self.index, len(self.jobs))
            self.index += 1
        job = self.jobs[position]
        return replace(job, cache_salt=f"{self.salt}-{passes}") if self.salt else job
