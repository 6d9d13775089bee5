"""A minimal OpenAI-compatible completions server with no model: it streams N chunks with
fixed, known delays, so the load generator's own overhead (and its handling of failing
servers) can be measured against known timings.

A streamed completion waits `ttft_s` after its body is read, sends one chunk per output token
`itl_s` apart (max_tokens chunks), then the usage chunk and `data: [DONE]`. Failures can be
injected: every k-th request answers HTTP 500 (`fail_every`), or every k-th request loses its
connection after `drop_after_chunks` chunks (`drop_every`); an unknown model answers HTTP 404
as vLLM does. It also serves GET /health, /v1/models and /metrics (vLLM's metric names, from
its real state), and GET /debug/timings: the server-side timeline of every completion request
(also `TimingServer.timings` in-process).

Standard library only. In-process:
    with TimingServer(ttft_s=0.02, itl_s=0.005) as server: ... server.url ...
or on its own (prints its URL):
    python -m thrifty.benchmark.timing_server --port 8000 --ttft-ms 20 --itl-ms 5
"""

import argparse
import contextlib
import json
import socket
import socketserver
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    request_queue_size = 1024  # hundreds of client workers may connect at once

    def __init__(self, address: tuple[str, int], owner: "TimingServer"):
        self.owner = owner
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can hang for
        # seconds without DNS; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, so that their threads finish."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class TimingServer:
    """The server's configuration and state; `start()` serves it from a daemon thread.
    models: the base model's name first, then adapter names (listed with the base as parent).
    fail_every / drop_every: 0 turns the failure off."""

    def __init__(self, ttft_s: float = 0.02, itl_s: float = 0.005,
                 models: tuple[str, ...] = ("timing-model",), fail_every: int = 0,
                 drop_every: int = 0, drop_after_chunks: int = 2, host: str = "127.0.0.1",
                 port: int = 0, kv_capacity_tokens: int = 65536):
        if not models:
            raise ValueError("the server needs at least one model name")
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.models = tuple(models)
        self.fail_every = fail_every
        self.drop_every = drop_every
        self.drop_after_chunks = drop_after_chunks
        self.kv_blocks = max(1, kv_capacity_tokens // KV_BLOCK_TOKENS)
        self.timings: list[RequestTiming] = []
        self._address = (host, port)
        self._lock = threading.Lock()
        self._held_tokens: dict[int, int] = {}  # in-flight request number -> tokens in its KV
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------

    def bind(self) -> "TimingServer":
        if self._http is None:
            self._http = _HTTPServer(self._address, self)
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
              body_read_s: float, connection_request: int) -> RequestTiming:
        with self._lock:
            timing = RequestTiming(len(self.timings) + 1, model, prompt[:PROMPT_KEPT_CHARS],
                                   connection_request, arrived_s, body_read_s)
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

    def injects_failure(self, timing: RequestTiming) -> bool:
        return bool(self.fail_every) and timing.number % self.fail_every == 0

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


class _BadRequest(Exception):
    pass


def prompt_tokens(prompt) -> int:
    """Whitespace-separated words of a text prompt; the length of a token-id prompt."""
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list) and all(isinstance(item, int) for item in prompt):
        return len(prompt)
    if isinstance(prompt, list) and all(isinstance(item, str) for item in prompt):
        return sum(len(item.split()) for item in prompt)
    raise _BadRequest("prompt must be a string, a list of strings or a list of token ids")


def parse_completion(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict) or "prompt" not in body:
        raise _BadRequest("the request needs a JSON object with a prompt")
    max_tokens = body.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _BadRequest("max_tokens must be a positive integer")
    body["max_tokens"] = max_tokens
    body["prompt_tokens"] = prompt_tokens(body["prompt"])
    return body


def sleep_until(deadline: float) -> None:
    wait = deadline - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def sse_chunk(payload: bytes) -> bytes:
    """One server-sent event as one HTTP/1.1 chunk (written with a single send)."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the load generator reuses one per worker
    disable_nagle_algorithm = True  # small chunks must leave at once, not ~40 ms later
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.requests_on_connection = 0
        self.arrived_s = 0.0

    def parse_request(self) -> bool:
        # called as soon as the request line is read
        self.arrived_s = time.perf_counter()
        self.requests_on_connection += 1
        return super().parse_request()

    def log_message(self, format, *args) -> None:
        pass  # a line per request would cost more than the delays being measured

    # --- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, b"", "text/plain")
        elif path == "/v1/models":
            self._send_json(200, owner.model_cards())
        elif path == "/metrics":
            self._send(200, owner.metrics_text().encode(), "text/plain; version=0.0.4")
        elif path == "/debug/timings":
            self._send_json(200, owner.timings_as_dicts())
        else:
            self._send_error(404, f"Not Found: {path}", "NotFoundError")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the body's end is unknown
            self._send_error(400, "Content-Length is not a number", "BadRequestError")
            return
        raw = self.rfile.read(length)
        body_read_s = time.perf_counter()
        path = self.path.split("?", 1)[0]
        if path.rstrip("/") != "/v1/completions":
            self._send_error(404, f"Not Found: {path}", "NotFoundError")
            return
        try:
            body = parse_completion(raw)
        except _BadRequest as exc:
            self._send_error(400, str(exc), "BadRequestError")
            return
        self._complete(body, body_read_s)

    # --- completions -------------------------------------------------------------------------

    def _complete(self, body: dict, body_read_s: float) -> None:
        owner = self.server.owner
        model = body.get("model")
        if model not in owner.models:
            self._send_error(404, f"The model `{model}` does not exist.", "NotFoundError")
            return
        prompt = body["prompt"] if isinstance(body["prompt"], str) else json.dumps(body["prompt"])
        timing = owner.admit(model, prompt, body["prompt_tokens"], self.arrived_s, body_read_s,
                             self.requests_on_connection)
        outcome = "client went away"
        try:
            if owner.injects_failure(timing):
                timing.status = 500
                self._send_error(500, "injected failure", "InternalServerError")
                outcome = "injected failure"
            elif body.get("stream"):
                outcome = self._stream(body, timing)
            else:
                outcome = self._answer(body, timing)
        except OSError:
            self.close_connection = True  # the client closed its end mid-answer
        finally:
            owner.release(timing, outcome)

    def _chunk_payload(self, timing: RequestTiming, index: int, max_tokens: int) -> bytes:
        finish = "length" if index == max_tokens - 1 else None
        return json.dumps({
            "id": f"cmpl-{timing.number}", "object": "text_completion", "created": 0,
            "model": timing.model,
            "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": finish}],
        }).encode()

    def _stream(self, body: dict, timing: RequestTiming) -> str:
        owner = self.server.owner
        max_tokens = body["max_tokens"]
        # vLLM sends the headers before the first token, so the client parses them meanwhile
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        drop = owner.drops(timing)
        for index in range(max_tokens):
            # deadlines from the body's arrival, so sleep overshoots do not add up
            sleep_until(timing.body_read_s + owner.ttft_s + index * owner.itl_s)
            if drop and index == owner.drop_after_chunks:
                return self._drop()
            self.wfile.write(sse_chunk(self._chunk_payload(timing, index, max_tokens)))
            if index == 0:
                timing.first_chunk_s = time.perf_counter()
            owner.progress(timing)
        if drop:
            return self._drop()  # drop_after_chunks >= max_tokens: every token, no [DONE]
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"id": f"cmpl-{timing.number}", "object": "text_completion", "created": 0,
                     "model": timing.model, "choices": [], "usage": _usage(body)}
            self.wfile.write(sse_chunk(json.dumps(usage).encode()))
        self.wfile.write(sse_chunk(b"[DONE]") + b"0\r\n\r\n")
        return "done"

    def _drop(self) -> str:
        """Close the connection mid-stream, as a crashing server would: no [DONE], no final
        empty chunk."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        return "dropped"

    def _answer(self, body: dict, timing: RequestTiming) -> str:
        owner = self.server.owner
        max_tokens = body["max_tokens"]
        sleep_until(timing.body_read_s + owner.ttft_s + (max_tokens - 1) * owner.itl_s)
        timing.chunks = max_tokens
        self._send_json(200, {
            "id": f"cmpl-{timing.number}", "object": "text_completion", "created": 0,
            "model": timing.model,
            "choices": [{"index": 0, "text": "x" * max_tokens, "logprobs": None,
                         "finish_reason": "length"}],
            "usage": _usage(body),
        })
        return "done"

    # --- plain answers -----------------------------------------------------------------------

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, body) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send_error(self, status: int, message: str, kind: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "param": None,
                                           "code": status}})


def _usage(body: dict) -> dict:
    prompt, completion = body["prompt_tokens"], body["max_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    server = TimingServer(ttft_s=args.ttft_ms / 1000, itl_s=args.itl_ms / 1000,
                          models=tuple(args.models or ("timing-model",)),
                          fail_every=args.fail_every, drop_every=args.drop_every,
                          drop_after_chunks=args.drop_after_chunks, host=args.host,
                          port=args.port).bind()
    print(server.url, flush=True)  # a parent process reads this line to find the port
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
