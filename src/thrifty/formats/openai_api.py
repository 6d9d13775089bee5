"""A small HTTP client for an OpenAI-compatible server (vLLM's, started by `thrifty serve` or not).

Standard library only, so the CLI stays light: adapter management, completions (plain and
streamed, for time to first token), and the server's readiness.
"""

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

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
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"No server answers at {self.url} ({reason}). Check the URL, and "
                              "that `thrifty serve` (or your server) is running.") from None

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

    def stream(self, model: str, prompt: str, max_tokens: int, **extra) -> Completion:
        """A streamed completion, timing the first token and every later one."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}, **extra}
        started = time.perf_counter()
        text, times, tokens = [], [], None
        with self._request("POST", "/v1/completions", body) as response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:"):].strip()
                if payload == "[DONE]":
                    break
                chunk = json.loads(payload)
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    if choice.get("text"):
                        times.append(time.perf_counter() - started)
                        text.append(choice["text"])
        e2e = time.perf_counter() - started
        return Completion(text="".join(text), output_tokens=tokens or len(times),
                          ttft_s=times[0] if times else None, e2e_s=e2e, token_times_s=times)


def error_text(raw: bytes) -> str:
    """vLLM's error bodies are {"error": {"message": ...}} or {"error": "..."}."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode(errors="replace").strip()[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)
