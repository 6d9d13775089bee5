"""A minimal OpenAI-compatible completions server with no model: it streams N chunks with
fixed, known delays, so the load generator's own overhead (and its handling of failing
servers) can be measured against known timings.

A streamed completion waits `ttft_s` after its body is read, sends one chunk per output token
`itl_s` apart (max_tokens chunks), then the usage chunk and `data: [DONE]`. Failures can be
injected: every k-th request answers HTTP 500 (`fail_every`); the requests numbered in a window
answer one status, as a server shedding load does (`storm`: (429, 10, 30)); every k-th request
loses its connection after `drop_after_chunks` chunks (`drop_every`) or goes silent there for
`stall_s` (`stall_every`); an unknown model answers HTTP 404 as vLLM does. It also serves
GET /health, /v1/models and /metrics (vLLM's metric names, from its real state), and GET
/debug/timings: the server-side timeline of every completion request,
with the `cache_salt` it carried (also `TimingServer.timings` in-process). With `api_key`,
every /v1 request must carry it as a bearer token (HTTP 401 otherwise), as with vLLM's
--api-key.

Standard library only. In-process:
    with TimingServer(ttft_s=0.02, itl_s=0.005) as server: ... server.url ...
or on its own (prints its URL):
    python -m thrifty.benchmark.timing_server --port 8000 --ttft-ms 20 --itl-ms 5
"""

import argparse
import contextlib
import threading
import time
from dataclasses import asdict, dataclass

from thrifty.benchmark.timing_http import TimingHTTPServer

KV_BLOCK_TOKENS = 16  # vLLM's default block size; the KV usage metric counts whole blocks
PROMPT_KEPT_CHARS = 200
SHUTDOWN_POLL_S = 0.05  # how often the serving loop checks for stop() (tests stop it often)


@dataclass
class RequestTiming:
    """One completion request as the server saw it. Times are time.perf_counter() values of
    the server process: their differences are what a client compares with its own."""
    number: int  # arrival order among completion requests for a served model, from 1
    model: str
    prompt: str  # its first 200 characters, so that a client can match its own records
    connection_request: int  # 1 for the first request on its connection (it paid the connect)
    arrived_s: float  # the request line was read
    body_read_s: float  # the body was read (the delays count from here)
    status: int = 200
    first_chunk_s: float | None = None  # the first token chunk was handed to the kernel
    finished_s: float | None = None
    chunks: int = 0  # token chunks sent
    outcome: str = "running"  # "done", "injected failure", "dropped", "client went away"
    cache_salt: str | None = None  # vLLM's prefix-cache salt, as the request sent it


class TimingServer:
    """The server's configuration and state; `start()` serves it from a daemon thread.
    models: the base model's name first, then adapter names (listed with the base as parent).
    fail_every / drop_every: 0 turns the failure off."""

    def __init__(self, ttft_s: float = 0.02, itl_s: float = 0.005,
                 models: tuple[str, ...] = ("timing-model",), fail_every: int = 0,
                 drop_every: int = 0, drop_after_chunks: int = 2, host: str = "127.0.0.1",
                 port: int = 0, kv_capacity_tokens: int = 65536, api_key: str | None = None,
                 storm: tuple[int, int, int] | None = None, stall_every: int = 0,
                 stall_s: float = 3600.0):
        if not models:
            raise ValueError("the server needs at least one model name")
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.models = tuple(models)
        self.fail_every = fail_every
        self.drop_every = drop_every
        self.drop_after_chunks = drop_after_chunks
        self.storm = storm  # (HTTP status, first request number, last request number)
        self.stall_every = stall_every
        self.stall_s = stall_s
        self.api_key = api_key
        self.kv_blocks = max(1, kv_capacity_tokens // KV_BLOCK_TOKENS)
        self.timings: list[RequestTiming] = []
        self._address = (host, port)
        self._lock = threading.Lock()
        self._held_tokens: dict[int, int] = {}  # in-flight request number -> tokens in its KV
        self._http: TimingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------

    def bind(self) -> "TimingServer":
        if self._http is None:
            self._http = TimingHTTPServer(self._address, self)
        return self

    def start(self) -> "TimingServer":
        self.bind()
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                        args=(SHUTDOWN_POLL_S,), name="timing-server")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until interrupted (the command line's way)."""
        self.bind()
        try:
            self._http.serve_forever()
        finally:
            self._http.close_connections()
            self._http.server_close()

    def stop(self) -> None:
        if self._http is None:
            return
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._http.close_connections()
        self._http.server_close()
        self._http = None

    def __enter__(self) -> "TimingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the timing server is not bound yet: call start() first")
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    # --- state -------------------------------------------------------------------------------

    def admit(self, model: str, prompt: str, prompt_tokens: int, arrived_s: float,
              body_read_s: float, connection_request: int,
              cache_salt: str | None = None) -> RequestTiming:
        with self._lock:
            timing = RequestTiming(len(self.timings) + 1, model, prompt[:PROMPT_KEPT_CHARS],
                                   connection_request, arrived_s, body_read_s,
                                   cache_salt=cache_salt)
            self.timings.append(timing)
            self._held_tokens[timing.number] = prompt_tokens
        return timing

    def progress(self, timing: RequestTiming) -> None:
        with self._lock:
            timing.chunks += 1
            if timing.number in self._held_tokens:
                self._held_tokens[timing.number] += 1

    def release(self, timing: RequestTiming, outcome: str) -> None:
        with self._lock:
            timing.finished_s = time.perf_counter()
            timing.outcome = outcome
            self._held_tokens.pop(timing.number, None)

    def injected_status(self, timing: RequestTiming) -> int | None:
        """The error status this request is answered with, if any."""
        if self.storm and self.storm[1] <= timing.number <= self.storm[2]:
            return self.storm[0]
        if self.fail_every and timing.number % self.fail_every == 0:
            return 500
        return None

    def stalls(self, timing: RequestTiming) -> bool:
        return bool(self.stall_every) and timing.number % self.stall_every == 0

    def drops(self, timing: RequestTiming) -> bool:
        return bool(self.drop_every) and timing.number % self.drop_every == 0

    def timings_as_dicts(self) -> list[dict]:
        with self._lock:
            return [asdict(timing) for timing in self.timings]

    def metrics_text(self) -> str:
        """vLLM's names in Prometheus text format: running = requests being answered now;
        nothing queues here, so waiting is 0 and nothing is ever preempted."""
        with self._lock:
            running = len(self._held_tokens)
            blocks = sum(-(-tokens // KV_BLOCK_TOKENS) for tokens in self._held_tokens.values())
        label = f'{{model_name="{self.models[0]}"}}'
        samples = [
            ("vllm:num_requests_running", "gauge", running),
            ("vllm:num_requests_waiting", "gauge", 0),
            ("vllm:kv_cache_usage_perc", "gauge", min(1.0, blocks / self.kv_blocks)),
            ("vllm:num_preemptions_total", "counter", 0),
        ]
        lines = []
        for name, kind, value in samples:
            lines += [f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        lines += ["# TYPE vllm:cache_config_info gauge",
                  f'vllm:cache_config_info{{block_size="{KV_BLOCK_TOKENS}",'
                  f'num_gpu_blocks="{self.kv_blocks}"}} 1.0']
        return "\n".join(lines) + "\n"

    def model_cards(self) -> dict:
        base = self.models[0]
        cards = [{"id": name, "object": "model", "created": 0, "owned_by": "thrifty",
                  "root": name, "parent": None if name == base else base, "permission": []}
                 for name in self.models]
        return {"object": "list", "data": cards}


# --- command line ------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m thrifty.benchmark.timing_server",
        description="A model-free OpenAI-compatible server that streams tokens with fixed "
                    "delays (for measuring a load generator). Prints its URL, then serves "
                    "until interrupted.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ttft-ms", type=float, default=20.0,
                        help="delay from the request to the first token")
    parser.add_argument("--itl-ms", type=float, default=5.0, help="delay between tokens")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="a served model name (repeatable; the first is the base, the "
                             "others are listed as its adapters); default timing-model")
    parser.add_argument("--fail-every", type=int, default=0,
                        help="answer every K-th completion with HTTP 500 (0: never)")
    parser.add_argument("--drop-every", type=int, default=0,
                        help="drop the connection of every K-th completion (0: never)")
    parser.add_argument("--drop-after-chunks", type=int, default=2,
                        help="token chunks sent before such a drop")
    parser.add_argument("--storm", metavar="STATUS:FIRST-LAST",
                        help="answer the completions numbered FIRST to LAST with STATUS "
                             "(e.g. 429:10-30)")
    parser.add_argument("--stall-every", type=int, default=0,
                        help="go silent after --drop-after-chunks chunks of every K-th "
                             "completion, for --stall-s seconds (0: never)")
    parser.add_argument("--stall-s", type=float, default=3600.0)
    parser.add_argument("--api-key", help="require this bearer token on /v1 requests")
    return parser.parse_args(argv)


def parse_storm(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    status, _, span = text.partition(":")
    first, _, last = span.partition("-")
    return int(status), int(first), int(last or first)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    server = TimingServer(ttft_s=args.ttft_ms / 1000, itl_s=args.itl_ms / 1000,
                          models=tuple(args.models or ("timing-model",)),
                          fail_every=args.fail_every, drop_every=args.drop_every,
                          drop_after_chunks=args.drop_after_chunks, host=args.host,
                          port=args.port, api_key=args.api_key, storm=parse_storm(args.storm),
                          stall_every=args.stall_every, stall_s=args.stall_s).bind()
    print(server.url, flush=True)  # a parent process reads this line to find the port
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
