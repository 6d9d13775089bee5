"""The timing server's HTTP side: the connection-tracking server and the request handler."""

import contextlib
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the server module imports this one; the names are for annotations only
    from thrifty.benchmark.timing_server import RequestTiming, TimingServer


class TimingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not keep the process alive
    request_queue_size = 1024  # hundreds of client workers may connect at once

    def __init__(self, address: tuple[str, int], owner: "TimingServer"):
        self.owner = owner
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, TimingHandler)

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


INJECTED_KINDS = {429: "TooManyRequestsError", 503: "ServiceUnavailableError"}


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
    salt = body.get("cache_salt")
    if salt is not None and (not isinstance(salt, str) or not 0 < len(salt) <= 128
                             or any(char in salt for char in "@/\\\0")):
        # vLLM's check (validate_cache_salt)
        raise _BadRequest("Parameter 'cache_salt' must be a non-empty string of at most 128 "
                          "characters and must not contain '@', '/', '\\', or NUL.")
    return body


def sleep_until(deadline: float) -> None:
    wait = deadline - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def sse_chunk(payload: bytes) -> bytes:
    """One server-sent event as one HTTP/1.1 chunk (written with a single send)."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


class TimingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the load generator reuses one per worker
    disable_nagle_algorithm = True  # small chunks must leave at once, not ~40 ms later
    server: TimingHTTPServer

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

    def refused(self, path: str) -> bool:
        """vLLM's --api-key check: /v1 requests need the key as a bearer token."""
        key = self.server.owner.api_key
        if not key or not path.startswith("/v1"):
            return False
        if self.headers.get("Authorization") == f"Bearer {key}":
            return False
        self._send_json(401, {"error": "Unauthorized"})
        return True

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if self.refused(path):
            return
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
        if self.refused(path):
            return
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
                             self.requests_on_connection, body.get("cache_salt"))
        outcome = "client went away"
        try:
            if status := owner.injected_status(timing):
                timing.status = status
                self._send_error(status, "injected failure", INJECTED_KINDS.get(
                    status, "InternalServerError"))
                outcome = "injected failure"
            elif body.get("stream"):
                outcome = self._stream(body, timing)
            else:
                outcome = self._answer(body, timing)
        except OSError:
            self.close_connection = True  # the client closed its end mid-answer
        finally:
            owner.release(timing, outcome)

    def _chunk_payload(self, timing: "RequestTiming", index: int, max_tokens: int) -> bytes:
        finish = "length" if index == max_tokens - 1 else None
        return json.dumps({
            "id": f"cmpl-{timing.number}", "object": "text_completion", "created": 0,
            "model": timing.model,
            "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": finish}],
        }).encode()

    def _stream(self, body: dict, timing: "RequestTiming") -> str:
        owner = self.server.owner
        max_tokens = body["max_tokens"]
        # vLLM sends the headers before the first token, so the client parses them meanwhile
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        drop, stall = owner.drops(timing), owner.stalls(timing)
        for index in range(max_tokens):
            # deadlines from the body's arrival, so sleep overshoots do not add up
            sleep_until(timing.body_read_s + owner.ttft_s + index * owner.itl_s)
            if drop and index == owner.drop_after_chunks:
                return self._drop()
            if stall and index == owner.drop_after_chunks:
                time.sleep(owner.stall_s)  # headers sent, then nothing: a hung engine
                stall = False
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

    def _answer(self, body: dict, timing: "RequestTiming") -> str:
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
