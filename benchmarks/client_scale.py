"""The load generator at GPU-benchmark scale, against the model-free timing server in its own
process (benchmarks/client_capacity.py measures the small loads):

- closed loop at concurrency 64, 256 and 1,024 with a GPU-like stream (TTFT 10 ms, a token
  every 50 ms, 32 tokens), three requests per user: the client's TTFT minus the server's own
  body-read -> first-chunk time on kept-alive connections, p50 and p99, and the client's CPU
  time as a share of one core;
- open loop at 1,000 requests/s (constant arrivals, 5 s; TTFT 10 ms, ITL 2 ms, 16 tokens):
  achieved rate, send lag, the same TTFT overhead and CPU share.
Each is repeated --repeats times; the tables give the median and the range over repetitions.
The project's targets: under 1 ms added to TTFT at p50, the client under one core.

The timing server answers each connection from a thread: at 1,024 streams its own delays (in
reading a request, in writing a chunk) count in "TTFT - server" too, so that figure is an upper
bound on what the client adds. It is therefore also split on the clock both processes share
(perf_counter, system-wide on Linux): sending (the client's send -> the server has read the
body: the client's write and the server's reading) and receiving (the server handed the first
chunk to the kernel -> the client has parsed it: the client's alone).

Run from the repository root on an otherwise idle machine:
    .venv/bin/python benchmarks/client_scale.py [--repeats 3] [--label asyncio]
Writes results/client_scale_<label>.json; results/client_scale.md compares every label
present (e.g. the thread-per-request generator measured at an earlier revision, `threads`).
"""

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import client_capacity as capacity
import common

from thrifty.benchmark.loadgen import Profile

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCIES = (64, 256, 1024)
STREAM = {"ttft_ms": 10.0, "itl_ms": 50.0, "output_tokens": 32, "requests_per_user": 3}
RATE = {"rate_per_s": 1000.0, "seconds": 5.0, "ttft_ms": 10.0, "itl_ms": 2.0,
        "output_tokens": 16}
FIGURES = ("ttft_minus_server_ms_p50", "ttft_minus_server_ms_p99",
           "client_cpu_pct_of_one_core", "errors_count", "sending_ms_p50", "receiving_ms_p50",
           "receiving_ms_p99")


def concurrency_row(url: str, concurrency: int, repeat: int) -> dict:
    jobs = capacity.tagged_jobs(f"r{repeat}c{concurrency}",
                                concurrency * STREAM["requests_per_user"],
                                STREAM["output_tokens"])
    records, cpu_share, origin_s = capacity.run_load(
        url, Profile("concurrency", concurrency), jobs, 0)
    return {"concurrency": concurrency, "requests_count": len(records),
            "errors_count": sum(not r.ok for r in records),
            "client_cpu_pct_of_one_core": round(100 * cpu_share, 1),
            **capacity.overheads(records, capacity.server_timings(url), origin_s)}


def rate_row(url: str, repeat: int) -> dict:
    rate = RATE["rate_per_s"]
    jobs = capacity.tagged_jobs(f"r{repeat}rate", round(rate * RATE["seconds"]) + 1,
                                RATE["output_tokens"])
    records, cpu_share, origin_s = capacity.run_load(url, Profile("constant", rate), jobs, repeat)
    sent = sorted(r.started_s for r in records)
    lags = [r.started_s - r.scheduled_s for r in records]
    return {"target_rate_per_s": rate, "requests_count": len(records),
            "errors_count": sum(not r.ok for r in records),
            "achieved_rate_per_s": round((len(sent) - 1) / (sent[-1] - sent[0]), 2),
            "send_lag_ms_p50": capacity.ms(lags, 50), "send_lag_ms_p99": capacity.ms(lags, 99),
            "client_cpu_pct_of_one_core": round(100 * cpu_share, 1),
            **capacity.overheads(records, capacity.server_timings(url), origin_s)}


def placement() -> dict:
    """The client on one CPU, the servers on the others: sharing CPUs, the scheduler shares
    them per thread, and a server with hundreds of threads starved the one-thread client (on
    2 CPUs it fell behind the 1,000 req/s schedule). On a GPU host the server is vLLM, on
    cores of its own."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"client_cpus": cpus, "server_cpus": cpus}
    return {"client_cpus": cpus[:1], "server_cpus": cpus[1:]}


def measure(repeats: int, cpus: dict) -> dict:
    """Every repetition of every row, each row kind on a server started for it."""
    rows: dict[str, list[dict]] = {}
    os.sched_setaffinity(0, cpus["server_cpus"])  # the servers inherit it, then the client's
    stream_server, stream_url = capacity.start_server(STREAM["ttft_ms"], STREAM["itl_ms"])
    rate_server, rate_url = capacity.start_server(RATE["ttft_ms"], RATE["itl_ms"])
    os.sched_setaffinity(0, cpus["client_cpus"])
    try:
        for repeat in range(repeats):
            for concurrency in CONCURRENCIES:
                rows.setdefault(f"concurrency {concurrency}", []).append(
                    concurrency_row(stream_url, concurrency, repeat))
                time.sleep(1.0)  # the server's threads of the last row wind down
            rows.setdefault("1000 req/s", []).append(rate_row(rate_url, repeat))
    finally:
        capacity.stop_server(stream_server)
        capacity.stop_server(rate_server)
    return rows


def spread(values: list) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(known), 3), "min": min(known), "max": max(known)}


def summary(rows: dict[str, list[dict]]) -> dict:
    return {name: {figure: spread([r.get(figure) for r in reps]) for figure in
                   (*FIGURES, "achieved_rate_per_s", "send_lag_ms_p50")}
            for name, reps in rows.items()}


def placed(result: dict) -> str:
    cpus = result.get("placement")
    if not cpus:
        return " shared by the client and the server"
    return f"; the client on CPU {cpus['client_cpus']}, the server on {cpus['server_cpus']}"


SPLIT = ("sending_ms_p50", "receiving_ms_p50", "receiving_ms_p99")
NONE = {"median": None}  # a figure an earlier result did not measure


def cell(figure: dict) -> str:
    if figure["median"] is None:
        return "n/a"
    return f"{figure['median']:g} ({figure['min']:g}–{figure['max']:g})"


def markdown(results: dict[str, dict]) -> str:
    lines = ["# Load generator at scale", "",
             "Measured with `.venv/bin/python benchmarks/client_scale.py` (see its docstring for "
             "the workloads); each cell: median (range) over the repetitions. TTFT - server: "
             "the client's TTFT minus the timing server's body-read -> first-chunk time, on "
             "kept-alive connections, including the threaded timing server's own delays at "
             "high concurrency (an upper bound on the client's share). Sending / receiving: "
             "the same figure split on the clock both processes share; receiving (the server "
             "handed the first chunk to the kernel -> the client parsed it) is the client's "
             "alone. Targets: p50 under 1 ms, the client under one core.", ""]
    for label, result in results.items():
        fp = result["fingerprint"]
        lines.append(f"- **{label}**: {result['generator']}; revision "
                     f"{fp.get('git_revision') or '?'}, {result['date']}, {result['repeats']} "
                     f"repetitions, {fp['hardware']['cpu_model']}, "
                     f"{result['machine']['cpu_count']} CPUs" + placed(result) + ".")
    lines += ["", "| load | generator | TTFT - server p50 ms | p99 ms | client CPU % of a core "
              "| errors | achieved req/s | send lag p50 ms | sending p50 ms | receiving p50 ms "
              "| receiving p99 ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = next(iter(results.values()))["summary"]
    for name in names:
        for label, result in results.items():
            s = result["summary"].get(name)
            if s:
                lines.append(f"| {name} | {label} | {cell(s['ttft_minus_server_ms_p50'])} | "
                             f"{cell(s['ttft_minus_server_ms_p99'])} | "
                             f"{cell(s['client_cpu_pct_of_one_core'])} | "
                             f"{cell(s['errors_count'])} | {cell(s['achieved_rate_per_s'])} | "
                             f"{cell(s['send_lag_ms_p50'])} | "
                             + " | ".join(cell(s.get(f, NONE)) for f in SPLIT) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="asyncio",
                        help="names the generator measured (the file client_scale_LABEL.json)")
    parser.add_argument("--generator", default="one asyncio event loop over aiohttp",
                        help="describes the generator measured, for the report")
    args = parser.parse_args()
    cpus = placement()
    fingerprint = common.fingerprint()  # before pinning: it counts the CPUs this process has
    rows = measure(args.repeats, cpus)
    result = {"benchmark": "client_scale", "generator": args.generator, "placement": cpus,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": capacity.machine(), "fingerprint": fingerprint,
              "repeats": args.repeats, "stream": STREAM, "rate": RATE,
              "summary": summary(rows), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"client_scale_{args.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    every = {path.stem.removeprefix("client_scale_"): json.loads(path.read_text())
             for path in sorted(RESULTS.glob("client_scale_*.json"))}
    (RESULTS / "client_scale.md").write_text(markdown(every))
    print(markdown(every))


if __name__ == "__main__":
    main()
