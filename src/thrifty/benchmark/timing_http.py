"""The timing server's HTTP side on one asyncio event loop (aiohttp.web): its routes and the
completion answers. An event loop, not a thread per connection, so that at 1,024 concurrent
streams the server's own delays stay small beside the load generator's it exists to measure."""

import asyncio
import contextlib
import json
import time
import weakref
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the server module imports this one; the names are for annotations only
    from thrifty.benchmark.timing_server import RequestTiming, TimingServer

INJECTED_KINDS = {429: "TooManyRequestsError", 503: "ServiceUnavailableError"}
OWNER = web.AppKey("owner", object)


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


async def sleep_until(deadline: float) -> None:
    wait = deadline - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)


def sse_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_response(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                        "code": status}}, status=status)


def make_app(owner: "TimingServer") -> web.Application:
    app = web.Application(middlewares=[_api_key_check], handler_args={"access_log": None})
    app[OWNER] = owner
    routes = Routes(owner)
    app.router.add_get("/health", routes.health)
    app.router.add_get("/v1/models", routes.models)
    app.router.add_get("/metrics", routes.metrics)
    app.router.add_get("/debug/timings", routes.timings)
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_post("/v1/completions/", routes.completions)
    return app


@web.middleware
async def _api_key_check(request: web.Request, handler):
    """vLLM's --api-key check: /v1 requests need the key as a bearer token; and its 404s."""
    key = request.app[OWNER].api_key
    if key and request.path.startswith("/v1") and (
            request.headers.get("Authorization") != f"Bearer {key}"):
        return web.json_response({"error": "Unauthorized"}, status=401)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return error_response(404, f"Not Found: {request.path}", "NotFoundError")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "Method Not Allowed", "MethodNotAllowedError")


class Routes:
    def __init__(self, owner: "TimingServer"):
        self.owner = owner
        # requests seen per connection (1 = it paid the connect); transports end with it
        self.served_on: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200, content_type="text/plain")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.owner.model_cards())

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.owner.metrics_text().encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4"})

    async def timings(self, request: web.Request) -> web.Response:
        return web.json_response(self.owner.timings_as_dicts())

    async def completions(self, request: web.Request) -> web.StreamResponse:
        arrived_s = time.perf_counter()  # the request line and headers are parsed
        transport = request.transport
        on_connection = self.served_on.get(transport, 0) + 1
        if transport is not None:
            self.served_on[transport] = on_connection
        raw = await request.read()
        body_read_s = time.perf_counter()
        try:
            body = parse_completion(raw)
        except _BadRequest as exc:
            return error_response(400, str(exc), "BadRequestError")
        model = body.get("model")
        if model not in self.owner.models:
            return error_response(404, f"The model `{model}` does not exist.", "NotFoundError")
        prompt = body["prompt"] if isinstance(body["prompt"], str) else json.dumps(body["prompt"])
        timing = self.owner.admit(model, prompt, body["prompt_tokens"], arrived_s, body_read_s,
                                  on_connection, body.get("cache_salt"))
        answer = Answer(self.owner, request, body, timing)
        outcome = "client went away"  # unless the answer ends: the client closed its end
        try:
            response, outcome = await answer.run()
            return response
        finally:
            self.owner.release(timing, outcome)


class Answer:
    """One completion: an injected failure, a stream of chunks, or a plain JSON answer."""

    def __init__(self, owner: "TimingServer", request: web.Request, body: dict,
                 timing: "RequestTiming"):
        self.owner, self.request, self.body, self.timing = owner, request, body, timing

    async def run(self) -> tuple[web.StreamResponse, str]:
        if status := self.owner.injected_status(self.timing):
            self.timing.status = status
            return error_response(status, "injected failure",
                                  INJECTED_KINDS.get(status, "InternalServerError")), \
                "injected failure"
        if self.body.get("stream"):
            return await self.stream()
        return await self.plain()

    def chunk_payload(self, index: int, max_tokens: int) -> bytes:
        finish = "length" if index == max_tokens - 1 else None
        return json.dumps({
            "id": f"cmpl-{self.timing.number}", "object": "text_completion", "created": 0,
            "model": self.timing.model,
            "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": finish}],
        }).encode()

    async def stream(self) -> tuple[web.StreamResponse, str]:
        owner, timing, max_tokens = self.owner, self.timing, self.body["max_tokens"]
        response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        # vLLM sends the headers before the first token, so the client parses them meanwhile
        await response.prepare(self.request)
        drop, stall = owner.drops(timing), owner.stalls(timing)
        for index in range(max_tokens):
            # deadlines from the body's arrival, so sleep overshoots do not add up
            await sleep_until(timing.body_read_s + owner.ttft_s + index * owner.itl_s)
            if drop and index == owner.drop_after_chunks:
                return self.drop(response)
            if stall and index == owner.drop_after_chunks:
                await asyncio.sleep(owner.stall_s)  # headers sent, then nothing: a hung engine
                stall = False
            await response.write(sse_event(self.chunk_payload(index, max_tokens)))
            if index == 0:
                timing.first_chunk_s = time.perf_counter()
            owner.progress(timing)
        if drop:
            return self.drop(response)  # drop_after_chunks >= max_tokens: no [DONE]
        options = self.body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"id": f"cmpl-{timing.number}", "object": "text_completion", "created": 0,
                     "model": timing.model, "choices": [], "usage": _usage(self.body)}
            await response.write(sse_event(json.dumps(usage).encode()))
        # [DONE] and the final empty chunk in one write: a client that stops reading at
        # [DONE] finds its connection clean and keeps it alive
        await response.write_eof(sse_event(b"[DONE]"))
        return response, "done"

    def drop(self, response: web.StreamResponse) -> tuple[web.StreamResponse, str]:
        """Close the connection mid-stream, as a crashing server would: no [DONE], no final
        empty chunk."""
        with contextlib.suppress(OSError):
            self.request.transport.close()  # what was written is flushed first
        return response, "dropped"

    async def plain(self) -> tuple[web.StreamResponse, str]:
        owner, max_tokens = self.owner, self.body["max_tokens"]
        await sleep_until(self.timing.body_read_s + owner.ttft_s + (max_tokens - 1) * owner.itl_s)
        self.timing.chunks = max_tokens
        return web.json_response({
            "id": f"cmpl-{self.timing.number}", "object": "text_completion", "created": 0,
            "model": self.timing.model,
            "choices": [{"index": 0, "text": "x" * max_tokens, "logprobs": None,
                         "finish_reason": "length"}],
            "usage": _usage(self.body),
        }), "done"


def _usage(body: dict) -> dict:
    prompt, completion = body["prompt_tokens"], body["max_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
