"""Adapter churn soak: `thrifty serve` on the W4A16 default model with the four demo adapters,
eight streaming clients for --minutes, and a churner that unloads one adapter and loads it
back every --churn-every seconds.

Each client loops: it picks a model (the base or an adapter) and one of a few prompts, streams
a greedy completion and checks it against that model's own completion of that prompt, taken
before the load started with every adapter loaded. A request is then
- correct: its text is the model's own;
- misrouted: its text is another model's completion of the prompt (the wrong adapter answered);
- diverged: neither (greedy decoding that drifted, e.g. under a different batch);
- not loaded: HTTP 404 for an adapter the churner had unloaded at that moment (expected: the
  request must get a clear answer, not hang);
- failed: anything else, by kind (refused, stalled, dropped, HTTP status).
The server's memory (RSS and USS of its processes, RSS also per process) is sampled every 2 s,
each by its own thread; its slope after the warm-up (the first fifth) says whether churn leaks,
and the processes' own slopes say which one. Hot loads are timed.

Goal: 0 failed and 0 misrouted requests, memory flat within noise after warm-up.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--results DIR]
Writes DIR/NAME.json and NAME.md (default benchmarks/results/soak; the integration test runs
one minute into a temporary folder). `--churn-every 0 --name soak_control` is the same traffic
without churn, to tell churn's memory growth from the server's own.
"""

import argparse
import datetime
import json
import random
import threading
import time
from pathlib import Path

import common
import psutil
import soak_report

from thrifty.benchmark.target import ServeProcess
from thrifty.core import paths
from thrifty.formats import openai_api
from thrifty.formats.openai_api import ServerClient, ServerError, StreamConnection
from thrifty.serve import demo_adapters

MODEL = "smollm2-135m"
PROMPTS = ("The history of the Roman Empire", "Chemical reactions between acids",
           "The tallest mountains of Asia", "Painting in the Renaissance")
MAX_TOKENS = 12


def base_checkpoint() -> Path:
    """The default model quantized to W4A16 with RTN (made once, reused)."""
    out = paths.home() / "work" / "soak" / "smollm2-135m-w4a16-rtn"
    if not (out / "thrifty-quantize.json").is_file():
        common.thrifty("quantize", MODEL, "--method", "rtn", "--out", str(out), "--force")
    return out


def process_role(process: psutil.Process) -> str:
    """What a process of the server's tree is: vLLM names its own ("VLLM::EngineCore_DP0"),
    the others by the module they run."""
    command = process.cmdline()
    if command and command[0].startswith("VLLM::"):
        return command[0].removeprefix("VLLM::")
    if "multiprocessing.resource_tracker" in " ".join(command):
        return "resource tracker"
    for module in ("thrifty.libs.vllm_server", "thrifty"):
        if module in command:
            return "APIServer" if module.endswith("vllm_server") else "thrifty serve"
    return process.name()


def start_server(base: Path, adapters: dict[str, Path], workdir: Path) -> tuple:
    args = [str(base), "--port", "0", "--max-model-len", "512", "--max-loras", str(len(adapters)),
            "--allow-adapters-from", str(demo_adapters.default_dir())]
    for name, path in adapters.items():
        args += ["--adapter", f"{name}={path}"]
    process = ServeProcess(args, workdir)
    return process, process.start()


def references(client: ServerClient, models: list[str]) -> dict[str, list[str]]:
    """Each model's greedy completion of each prompt, every adapter loaded."""
    return {model: [client.complete(model, prompt, MAX_TOKENS).text for prompt in PROMPTS]
            for model in models}


class Soak:
    """The shared state of the clients, the churner and the memory sampler."""

    def __init__(self, url: str, refs: dict[str, list[str]], adapters: dict[str, Path],
                 server_pid: int, seconds: float, churn_every_s: float):
        self.url, self.refs, self.adapters = url, refs, adapters
        self.server_pid = server_pid
        self.churn_every_s = churn_every_s
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.server_died_at_s: float | None = None
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.out_windows: dict[str, list[list]] = {}  # adapter -> [[unloading at, back at]]
        self.hot_loads: list[dict] = []
        self.churn_errors: list[dict] = []
        self.memory: list[dict] = []  # RSS samples
        self.memory_uss: list[dict] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    # --- the clients -------------------------------------------------------------------

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        connection = StreamConnection(self.url, None, timeout_s=60.0)
        models = list(self.refs)
        try:
            while self.running():
                model, prompt = rng.choice(models), rng.randrange(len(PROMPTS))
                body = json.dumps({"model": model, "prompt": PROMPTS[prompt], "stream": True,
                                   "max_tokens": MAX_TOKENS, "temperature": 0.0}).encode()
                started = self.now()
                stream = connection.stream(body, time.monotonic)
                self.record(model, prompt, stream, started,
                            self.was_out(model, started, self.now()))
                if stream.error_kind in (openai_api.REFUSED, openai_api.UNREACHABLE):
                    time.sleep(0.5)  # nothing listens: do not spin until the run ends
        finally:
            connection.close()

    def was_out(self, model: str, since: float, until: float) -> bool:
        """Whether the churner had `model` out at any moment between `since` and `until`."""
        with self.lock:
            return any(out <= until and (back is None or back >= since)
                       for out, back in self.out_windows.get(model, []))

    def record(self, model: str, prompt: int, stream, started: float, churned: bool) -> None:
        if stream.ok:
            text = stream.text
            others = [m for m in self.refs if m != model and self.refs[m][prompt] == text]
            outcome = ("correct" if text == self.refs[model][prompt] else
                       "misrouted" if others else "diverged")
        elif stream.status == 404 and churned:
            outcome = "not loaded"
        else:
            outcome = "failed: " + (stream.error_kind or "other")
        with self.lock:
            self.requests.append({"model": model, "prompt": prompt, "at_s": round(started, 3),
                                  "e2e_s": round(stream.e2e_s or 0.0, 4), "outcome": outcome,
                                  "error": stream.error})

    # --- the churner and the sampler ---------------------------------------------------

    def churner(self) -> None:
        if not self.churn_every_s:
            return  # the control: the same traffic, no churn
        client = ServerClient(self.url)
        names = sorted(self.adapters)
        turn = 0
        while self.running():
            time.sleep(self.churn_every_s)
            if not self.running():
                return
            name = names[turn % len(names)]
            turn += 1
            try:
                self.churn(client, name)
            except ServerError as exc:  # a failed unload or load fails the soak, named
                with self.lock:
                    self.churn_errors.append({"adapter": name, "at_s": round(self.now(), 3),
                                              "error": str(exc)})

    def churn(self, client: ServerClient, name: str) -> None:
        """Unload `name`, wait, load it back; its out-window closes even if the load fails, so
        later 404s for it count as failures, not as expected."""
        window = [self.now(), None]
        with self.lock:
            self.out_windows.setdefault(name, []).append(window)
        try:
            client.unload_adapter(name)
            time.sleep(1.0)  # requests for it meanwhile get HTTP 404
            started = time.monotonic()
            client.load_adapter(name, str(self.adapters[name]))
            load_s = time.monotonic() - started
            with self.lock:
                self.hot_loads.append({"adapter": name, "at_s": round(self.now(), 3),
                                       "load_s": round(load_s, 4)})
        finally:
            with self.lock:
                window[1] = self.now()

    def sampler(self, series: str) -> None:
        """Sample the server tree's RSS (`series` "rss", /proc/PID/statm: lock-free counters)
        or USS ("uss", smaps_rollup: walks the page tables under the process's mmap lock, so it
        can wait seconds on a busy engine). Two threads, so a slow USS read never thins RSS."""
        server = psutil.Process(self.server_pid)
        while self.running():
            reading, total = time.monotonic(), 0
            try:
                tree = [server, *server.children(recursive=True)]
                alive = server.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                alive = False
            if not alive:  # the run ends: clients would only spin on refused connections
                with self.lock:
                    if self.server_died_at_s is None:
                        self.server_died_at_s = round(self.now(), 2)
                    self.deadline = min(self.deadline, time.monotonic())
                return
            by_process: dict[str, float] = {}
            for process in tree:
                try:
                    used = (process.memory_info().rss if series == "rss"
                            else process.memory_full_info().uss)
                    role = process_role(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += used
                by_process[role] = round(by_process.get(role, 0) + used / 2**20, 1)
            sample = {"at_s": round(self.now(), 2), f"{series}_mib": round(total / 2**20, 1),
                      "read_s": round(time.monotonic() - reading, 3), "by_process": by_process}
            (self.memory if series == "rss" else self.memory_uss).append(sample)
            time.sleep(2.0)


def run(seconds: float, clients: int, churn_every_s: float, workdir: Path) -> dict:
    adapters = demo_adapters.trained(demo_adapters.default_dir())
    if len(adapters) < 4:
        raise SystemExit("the demo adapters are missing: run `thrifty adapters demo` first")
    process, ready = start_server(base_checkpoint(), adapters, workdir)
    try:
        url = ready["url"].removesuffix("/v1")
        served = ServerClient(url).models()
        base = next(m["id"] for m in served if not m.get("parent"))
        refs = references(ServerClient(url), [base, *sorted(adapters)])
        soak = Soak(url, refs, adapters, ready["server_pid"], seconds, churn_every_s)
        threads = [threading.Thread(target=soak.client, args=(seed,)) for seed in range(clients)]
        threads += [threading.Thread(target=soak.churner)]
        threads += [threading.Thread(target=soak.sampler, args=(s,)) for s in ("rss", "uss")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        process.stop()
    return {"references": refs, "requests": soak.requests, "hot_loads": soak.hot_loads,
            "churn_errors": soak.churn_errors, "server_died_at_s": soak.server_died_at_s,
            "memory": soak.memory, "memory_uss": soak.memory_uss,
            "server": {k: ready[k] for k in ("base", "flags") if k in ready}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--churn-every", type=float, default=10.0,
                        help="seconds (0: no churn, the control run)")
    parser.add_argument("--name", default="soak", help="the result files' name")
    parser.add_argument("--results", default=str(common.RESULTS))
    parser.add_argument("--render-only", action="store_true",
                        help="recompute the summary and NAME.md from the committed NAME.json")
    args = parser.parse_args()
    results = Path(args.results)
    if args.render_only:
        result = json.loads((results / f"{args.name}.json").read_text())
        raw = {k: result[k] for k in ("requests", "hot_loads", "memory", "references")}
        raw.update({k: result[k] for k in ("churn_errors", "memory_uss", "server_died_at_s")
                    if k in result})
        result["summary"] = soak_report.summarize(raw)
        (results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (results / f"{args.name}.md").write_text(soak_report.markdown(result))
        return
    results.mkdir(parents=True, exist_ok=True)
    serve_logs = paths.home() / "work" / "soak" / f"{args.name}-serve"  # not committed
    raw = run(args.minutes * 60, args.clients, args.churn_every, serve_logs)
    result = {"benchmark": "soak", "name": args.name, "fingerprint": common.fingerprint(),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "settings": {"minutes": args.minutes, "clients": args.clients,
                           "churn_every_s": args.churn_every, "max_tokens": MAX_TOKENS,
                           "prompts_count": len(PROMPTS),
                           "base": "smollm2-135m W4A16_ASYM RTN"},
              "summary": soak_report.summarize(raw), **raw}
    (results / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / f"{args.name}.md").write_text(soak_report.markdown(result))
    print(soak_report.markdown(result))


if __name__ == "__main__":
    main()
