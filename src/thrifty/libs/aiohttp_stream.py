"""Streamed completions over aiohttp, the HTTP client `vllm bench serve` uses, on one event loop.

The load generator needs thousands of requests in flight from one process without a thread
each; benchmarks/results/client_scale.md compares the two designs (the event loop adds less
to TTFT at 1,000 req/s and at 256 streams, not at 64, and neither is clean at 1,024). Each read is
timed as it returns, before it is parsed by the one parser of server-sent events
(formats/openai_api.CompletionStream). aiohttp's exceptions are mapped here to the failure
kinds a report counts (refused, unreachable, stalled, dropped, HTTP status).
"""

import asyncio
from collections.abc import Callable

import aiohttp

from thrifty.formats import openai_api
from thrifty.formats.openai_api import CompletionStream

# Under the keep-alive timeout of vLLM's server (uvicorn: 5 s), so that the client drops an idle
# pooled connection before the server does; a POST on a connection the server had just closed
# would fail, and a POST is never retried.
KEEPALIVE_S = 3.0


def session(api_key: str | None, timeout_s: float) -> aiohttp.ClientSession:
    """One pool of kept-alive connections, without a limit on their number; `timeout_s` bounds
    the connect and every silence between two reads (a stalled stream), not a whole request."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers,
                                 auto_decompress=False)


def completions_url(url: str) -> str:
    return url.rstrip("/").removesuffix("/v1") + "/v1/completions"


async def stream(client: aiohttp.ClientSession, url: str, body: bytes,
                 clock: Callable[[], float]) -> CompletionStream:
    """POST one streamed completion; never raises (but for cancellation): a failure is the
    returned stream's error and error_kind, with whatever arrived before it."""
    result = CompletionStream(clock())
    try:
        async with client.post(url, data=body) as response:
            result.status = response.status
            if response.status != 200:
                text = openai_api.error_text(await response.read())[:300]
                result.error = f"HTTP {response.status}: {text}"
                result.error_kind = openai_api.http_kind(response.status)
                result.e2e_s = clock() - result.started_s
                return result
            async for data in response.content.iter_any():
                result.feed(data, clock())
                if result.done:
                    break
            result.finish(clock())
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        result.e2e_s = clock() - result.started_s
        what = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        result.error = f"connection failed after {result.chunks} chunks ({what})"
        result.error_kind = failure_kind(exc)
    return result


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):  # no connection, so no request was sent
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return openai_api.REFUSED if refused else openai_api.UNREACHABLE
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return openai_api.STALLED
    return openai_api.connection_kind(exc)
