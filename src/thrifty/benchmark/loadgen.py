"""The load generator: streams completions at a fixed concurrency (closed loop) or a fixed
arrival rate (open loop: constant or Poisson), timing every chunk.

Every request of a load point is a task on one asyncio event loop, over one aiohttp session of
kept-alive connections (libs/aiohttp_stream.py; `vllm bench serve` works the same way), so a
thousand streams in flight cost no thread each. What the client adds to a request's time to
first token is measured in benchmarks/client_capacity.py. A server that answers with an error,
stalls or drops the connection mid-stream produces a failed record (with its kind), never
retried.

vLLM caches prompt prefixes, so a prompt sent again would skip most of its prefill. Given a
run's cache salt, every request carries vLLM's `cache_salt` (one per load point and per pass
over the prompts): no point, and no pass of a `--duration` point, is served from the cache
of another.
"""

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from thrifty.benchmark.metrics import RequestRecord
from thrifty.benchmark.workload import Prompt
from thrifty.formats.openai_api import CompletionStream
from thrifty.libs import aiohttp_stream


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
        self.url = aiohttp_stream.completions_url(url)
        self.api_key = api_key
        self.ignore_eos = ignore_eos
        self.cache_salt = cache_salt  # the run's; None sends no salt
        self.timeout_s = timeout_s
        self.on_done = on_done or (lambda record: None)
        self.records: list[RequestRecord] = []
        self.stop = threading.Event()  # set: send nothing more
        self._origin = time.perf_counter()

    def clock(self) -> float:
        return time.perf_counter() - self._origin

    @property
    def origin_s(self) -> float:
        """The time.perf_counter() value the records' times count from (a system-wide clock
        on Linux: comparable with another process's perf_counter)."""
        return self._origin

    def run_point(self, point: int, profile: Profile, jobs: list[Job], seed: int,
                  duration_s: float | None = None, record: bool = True) -> None:
        """Send `jobs` (cycled until `duration_s` when given) under `profile`. Ctrl-C cancels
        the requests in flight (they are not recorded) and propagates."""
        deadline = self.clock() + duration_s if duration_s else None
        salt = self.cache_salt and f"{self.cache_salt}-{'w' if point < 0 else point}"
        feed = _JobFeed(jobs, cycle=duration_s is not None, salt=salt)
        try:
            asyncio.run(self._point(point, profile, feed, seed, deadline, record))
        except BaseException:
            self.stop.set()  # finished requests stay recorded
            raise

    async def _point(self, point: int, profile: Profile, feed: "_JobFeed", seed: int,
                     deadline: float | None, keep: bool) -> None:
        async with aiohttp_stream.session(self.api_key, self.timeout_s) as client:
            send = _Sender(self, client, point, keep)
            if profile.kind == "concurrency":
                # N users that start together and each send their next request as soon as
                # their last one ends (as `vllm bench serve --max-concurrency` does)
                users = [self._closed_loop_user(send, feed, deadline)
                         for _ in range(int(profile.load))]
                await asyncio.gather(*users)
            else:
                await self._open_loop(send, profile, feed, deadline, seed)

    async def _closed_loop_user(self, send: "_Sender", feed: "_JobFeed",
                                deadline: float | None) -> None:
        while not self.stop.is_set() and (deadline is None or self.clock() < deadline):
            job = feed.next()
            if job is None:
                return
            await send(job, None)

    async def _open_loop(self, send: "_Sender", profile: Profile, feed: "_JobFeed",
                         deadline: float | None, seed: int) -> None:
        """Start each job at its arrival time, waiting for a free slot at the concurrency cap.
        The schedule is absolute, so a late wake-up never shifts the arrivals after it."""
        rng = random.Random(seed)
        slots = asyncio.Semaphore(profile.concurrency) if profile.concurrency else None
        tasks: set[asyncio.Task] = set()
        next_at = self.clock()
        while not self.stop.is_set():
            job = feed.next()
            if job is None or (deadline is not None and next_at >= deadline):
                break
            if (wait := next_at - self.clock()) > 0:
                await asyncio.sleep(wait)
            if slots is not None:
                await slots.acquire()
            task = asyncio.create_task(send(job, next_at, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += (rng.expovariate(profile.load) if profile.kind == "poisson"
                        else 1.0 / profile.load)
        await asyncio.gather(*tasks)


class _Sender:
    """Sends one job and records it (a load point's session, point index and keep flag)."""

    def __init__(self, run: LoadRun, client, point: int, keep: bool):
        self.run, self.client, self.point, self.keep = run, client, point, keep

    async def __call__(self, job: Job, scheduled: float | None,
                       slots: asyncio.Semaphore | None = None) -> None:
        run = self.run
        try:
            stream = await aiohttp_stream.stream(
                self.client, run.url, request_body(job, run.ignore_eos), run.clock)
        finally:
            if slots is not None:
                slots.release()
        result = as_record(stream, self.point, job, scheduled)
        if self.keep:
            run.records.append(result)
        run.on_done(result)


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


class _JobFeed:
    """Hands out jobs in order, once or cycling; with a salt, each pass over the jobs gets its
    own cache salt (salt-0, salt-1, ...)."""

    def __init__(self, jobs: list[Job], cycle: bool, salt: str | None = None):
        self.jobs = jobs
        self.cycle = cycle
        self.salt = salt
        self.index = 0

    def next(self) -> Job | None:
        if not self.jobs or (self.index >= len(self.jobs) and not self.cycle):
            return None
        passes, position = divmod(self.index, len(self.jobs))
        self.index += 1
        job = self.jobs[position]
        return replace(job, cache_salt=f"{self.salt}-{passes}") if self.salt else job
