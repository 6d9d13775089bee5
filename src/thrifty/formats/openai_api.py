"""The one client for an OpenAI-compatible server (vLLM's, started by `thrifty serve` or not).

Standard library only, so the CLI stays light: adapter management, completions (plain and
streamed, for time to first token), the server's readiness, and the one streaming connection
and server-sent-events parser that the load generator (thrifty.benchmark.loadgen) uses too.
"""

import errno
import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from thrifty.core.errors import ThriftyError


class ServerError(ThriftyError):
    """The server answered with an error (the message carries its status and reason)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Completion:
    text: str
    output_tokens: int
    ttft_s: float | None = None  # streamed requests only
    e2e_s: float = 0.0
    token_times_s: list[float] = field(default_factory=list)
    token_ids: list[int] | None = None  # when asked for with return_token_ids=True


class ServerClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 300.0):
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.api_key = api_key
        self.timeout_s = timeout_s

    # --- plumbing ------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None,
                 timeout_s: float | None = None):
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{method} {path} failed with HTTP {exc.code}: "
                              f"{error_text(exc.read())}", exc.code) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None

    def _unreachable(self, reason) -> ServerError:
        return ServerError(f"No server answers at {self.url} ({reason}). Check the URL, and "
                           "that `thrifty serve` (or your server) is running.")

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._request(method, path, body) as response:
            return json.loads(response.read() or b"{}")

    # --- server state --------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            with self._request("GET", "/health", timeout_s=2.0) as response:
                return response.status == 200
        except ServerError:
            return False

    def models(self) -> list[dict]:
        return self._json("GET", "/v1/models")["data"]

    def thrifty_info(self) -> dict | None:
        """What a server started by `thrifty serve` allows (None for other servers)."""
        try:
            return self._json("GET", "/v1/thrifty/info")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def metrics_text(self) -> str:
        with self._request("GET", "/metrics") as response:
            return response.read().decode()

    # --- adapters ------------------------------------------------------------------------

    def load_adapter(self, name: str, path: str) -> str:
        with self._request("POST", "/v1/load_lora_adapter",
                           {"lora_name": name, "lora_path": path}) as response:
            return response.read().decode()

    def unload_adapter(self, name: str) -> str:
        with self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name}) as response:
            return response.read().decode()

    # --- completions ---------------------------------------------------------------------

    def complete(self, model: str, prompt: str, max_tokens: int, **extra) -> Completion:
        """A greedy completion (temperature 0 unless given)."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": 0.0, **extra}
        started = time.perf_counter()
        answer = self._json("POST", "/v1/completions", body)
        choice = answer["choices"][0]
        return Completion(text=choice["text"], output_tokens=answer["usage"]["completion_tokens"],
                          e2e_s=time.perf_counter() - started, token_ids=choice.get("token_ids"))

    def stream(self, model: str, prompt: str | list[int], max_tokens: int,
               **extra) -> Completion:
        """A streamed completion, timing the first token and every later one (from the send,
        on a fresh connection: connecting is not counted)."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}, **extra}
        connection = StreamConnection(self.url, self.api_key, self.timeout_s)
        try:
            connection.connect()
        except OSError as exc:
            raise self._unreachable(exc) from None
        try:
            stream = connection.stream(json.dumps(body).encode(), time.perf_counter)
        finally:
            connection.close()
        if stream.status is not None and stream.status != 200:
            raise ServerError(f"POST /v1/completions failed with {stream.error}", stream.status)
        if stream.error:
            raise ServerError(f"The streamed completion from {self.url} failed: {stream.error}",
                              stream.status)
        return Completion(text=stream.text, output_tokens=stream.output_tokens or 0,
                          ttft_s=stream.ttft_s, e2e_s=stream.e2e_s or 0.0,
                          token_times_s=[t - stream.started_s for t in stream.chunk_times_s])


def error_text(raw: bytes) -> str:
    """vLLM's error bodies are {"error": {"message": ...}} or {"error": "..."}."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode(errors="replace").strip()[:500]
    return error_message(body)


def error_message(body) -> str:
    """The message of a decoded error body (or of an error event in a stream)."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


# --- streamed completions: the one parser and the one streaming connection ---------------

READ_SIZE = 65536  # one read takes whatever has arrived, usually one event (one HTTP chunk)

# Why a streamed request failed, in a few kinds a report can count and place in time (the
# message keeps the detail). An HTTP error is its own kind: "HTTP 429", "HTTP 503", ...
REFUSED = "refused (no server listening)"
UNREACHABLE = "unreachable (name, route or TLS failed before the request)"
STALLED = "stalled (no bytes within the timeout)"
DROPPED = "dropped (connection closed mid-stream)"
ERROR_EVENT = "error event in the stream"
BAD_STREAM = "malformed stream"
NO_TOKENS = "finished without tokens"


def http_kind(status: int) -> str:
    return f"HTTP {status}"


def connection_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, socket.gaierror | ssl.SSLError) or getattr(exc, "errno", None) in (
            errno.EHOSTUNREACH, errno.ENETUNREACH):
        return UNREACHABLE
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return STALLED
    return DROPPED


class CompletionStream:
    """One streamed completion as it arrives: the one parser of its server-sent events
    (`data:` lines, `[DONE]`, choices, usage, error events), for ServerClient and the load
    generator alike. Fed the bytes of each read with the time they arrived (any clock), it
    keeps the arrival time of every chunk carrying a choice, and judges the stream at the end.
    """

    def __init__(self, started_s: float = 0.0):
        self.started_s = started_s
        self.chunk_times_s: list[float] = []  # on the caller's clock, one per chunk with choices
        self.text_parts: list[str] = []
        self.output_tokens: int | None = None  # the server's usage counts, when it sends them
        self.input_tokens: int | None = None
        self.status: int | None = None  # the HTTP status, once answered
        self.error: str | None = None  # why it failed (an error event, a bad line, ...)
        self.error_kind: str | None = None  # one of the kinds above
        self.done = False  # `data: [DONE]` seen
        self.e2e_s: float | None = None
        self._pending = b""  # the start of a line whose end has not arrived yet

    @property
    def chunks(self) -> int:
        return len(self.chunk_times_s)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_times_s[0] - self.started_s if self.chunk_times_s else None

    @property
    def itl_s(self) -> list[float]:
        times = self.chunk_times_s
        return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and self.chunks > 0

    def feed(self, data: bytes, now: float) -> None:
        """Parse the bytes of one read (any split: a line may end in a later read)."""
        if b"\n" not in data:
            self._pending += data
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            if not self.done:
                self._line(line.strip(), now)

    def _line(self, line: bytes, now: float) -> None:
        if not line.startswith(b"data:"):
            return  # blank lines end events; comments, event:, id: and retry: carry nothing
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._fail(f"the stream carried a line that is not JSON: {payload[:100]!r}",
                       BAD_STREAM)
            return
        if not isinstance(event, dict):
            self._fail(f"the stream carried an event that is not an object: {payload[:100]!r}",
                       BAD_STREAM)
            return
        if "error" in event:
            self._fail(f"the server sent an error mid-stream: {error_message(event)}",
                       ERROR_EVENT)
        if choices := event.get("choices"):
            self.chunk_times_s.append(now)
            self.text_parts.extend(c.get("text") or "" for c in choices if isinstance(c, dict))
        if isinstance(usage := event.get("usage"), dict):
            self.output_tokens = usage.get("completion_tokens") or self.output_tokens
            if usage.get("prompt_tokens") is not None:
                self.input_tokens = usage["prompt_tokens"]

    def _fail(self, message: str, kind: str) -> None:
        if self.error is None:  # the first failure is the cause; later ones follow from it
            self.error = message
            self.error_kind = kind

    def finish(self, now: float) -> None:
        """The stream ended (or broke off): its duration and its verdict."""
        self.e2e_s = now - self.started_s
        if not self.done:
            self._fail(f"the server closed the stream after {self.chunks} chunks without "
                       "finishing it", DROPPED)
        elif self.chunks == 0:
            self._fail("the stream carried no tokens", NO_TOKENS)
        if self.output_tokens is None and self.chunks:
            self.output_tokens = self.chunks  # a server that does not report usage


class StreamConnection:
    """One keep-alive connection for streamed completions, reopened after any failure. It
    owns its socket so that each request leaves in a single write (http.client sends the
    headers and the body separately, which costs a few tenths of a millisecond of TTFT), and
    times each read as it returns, before parsing it."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        path = parts.path.rstrip("/").removesuffix("/v1") + "/v1/completions"
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                     f"{auth}Content-Length: ")
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None

    def connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _post(self, body: bytes) -> http.client.HTTPResponse:
        sock = self.connect()
        sock.sendall(f"{self.head}{len(body)}\r\n\r\n".encode() + body)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        return response

    def _send(self, body: bytes) -> http.client.HTTPResponse:
        """POST on the kept-alive connection. A server may close an idle keep-alive connection
        at any moment; a reused connection that fails before any answer is retried once on a
        fresh one (as aiohttp does; the server cannot have started that request)."""
        reused = self.sock is not None
        try:
            return self._post(body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        return self._post(body)

    @staticmethod
    def _drain(response: http.client.HTTPResponse) -> bool:
        """Read the chunked body's end after [DONE]; whether the connection can be reused."""
        try:
            response.read()
        except (http.client.HTTPException, OSError):
            return False
        return not response.will_close

    def stream(self, body: bytes, clock: Callable[[], float]) -> CompletionStream:
        """Send one streamed completion (a JSON body with "stream": true); never raises: a
        failure is the returned stream's `error`, with whatever arrived before it."""
        stream = CompletionStream(clock())
        try:
            response = self._send(body)
            stream.status = response.status
            if response.status != 200:
                stream.error = f"HTTP {response.status}: {error_text(response.read())[:300]}"
                stream.error_kind = http_kind(response.status)
                stream.e2e_s = clock() - stream.started_s
                if response.will_close:
                    self.close()
                return stream
            while not stream.done:
                try:
                    data = response.read1(READ_SIZE)
                except http.client.IncompleteRead:
                    data = b""  # the connection closed inside a chunk
                if not data:
                    break
                stream.feed(data, clock())
            stream.finish(clock())
            if not (stream.done and self._drain(response)):
                self.close()
        except (http.client.HTTPException, OSError, ValueError) as exc:
            stream.e2e_s = clock() - stream.started_s
            what = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            stream.error = f"connection failed after {stream.chunks} chunks ({what})"
            stream.error_kind = connection_kind(exc)
            self.close()
        return stream
