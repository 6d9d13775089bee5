"""The load generator's own capacity, against the model-free timing server
(thrifty.benchmark.timing_server) run as a separate process, so that the client's threads do
not share a GIL with the server's:

- rate holding: open-loop constant and Poisson arrivals at each target rate; the achieved rate
  is (requests - 1) / (last send - first send), compared with the target and (for Poisson,
  whose drawn gaps only average out to the target) with the schedule actually drawn; the send
  lag is send time - scheduled time, p50 and p99.
- TTFT overhead: closed loop at concurrency 1 and 8; per request, the client's TTFT minus the
  server's own time from reading the request body to flushing the first chunk, p50 and p99
  (on kept-alive connections; the first request of each connection also pays the connect,
  reported apart), and the client's TTFT minus the configured delay.

The project's targets: the rate held within 1%, and under 1 ms added to TTFT at p50.

Run: .venv/bin/python benchmarks/client_capacity.py [--quick]
Writes benchmarks/results/client_capacity.json and .md (with --quick, a short smoke run:
client_capacity_quick.json and .md).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import common

from thrifty.benchmark.loadgen import Job, LoadRun, Profile
from thrifty.benchmark.metrics import RequestRecord, error_kinds
from thrifty.benchmark.workload import Prompt
from thrifty.core import processes
from thrifty.core.stats import percentile

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "timing-model"
TTFT_MS, ITL_MS, OUTPUT_TOKENS = 10.0, 2.0, 16
RATE_TARGET_PCT, TTFT_TARGET_MS = 1.0, 1.0
FULL = {"rates": (10, 50, 100, 200), "rate_seconds": 8.0, "ttft_requests": 200}
QUICK = {"rates": (50, 200), "rate_seconds": 2.0, "ttft_requests": 40}


# --- the server process ------------------------------------------------------------------

def start_server(ttft_ms: float = TTFT_MS, itl_ms: float = ITL_MS) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "thrifty.benchmark.timing_server", "--port", "0",
               "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--model", MODEL]
    # it dies with this script, however the script ends (a killed run left servers behind)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                               **processes.spawn_options(own_group=False))
    url = process.stdout.readline().strip()  # it prints its URL once it listens
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"the timing server did not start (it printed {url!r})")
    return process, url


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


def server_timings(url: str) -> dict[str, dict]:
    """The server's timeline of every request so far, by the tag its prompt starts with."""
    with urllib.request.urlopen(url + "/debug/timings", timeout=30) as response:
        return {t["prompt"].split()[0]: t for t in json.loads(response.read())}


# --- one measurement ---------------------------------------------------------------------

def tagged_jobs(phase: str, count: int, output_tokens: int = OUTPUT_TOKENS) -> list[Job]:
    """Jobs whose prompt starts with a unique tag, carried in the record's adapter field, so
    that each client record can be matched with the server's timing of the same request."""
    jobs = []
    for index in range(count):
        tag = f"{phase}-{index}"
        jobs.append(Job(MODEL, tag, Prompt(f"{tag} hello world", 3, output_tokens)))
    return jobs


def run_load(url: str, profile: Profile, jobs: list[Job],
             seed: int) -> tuple[list, float, float]:
    """The records, the client's CPU time as a share of one core over the run, and the
    perf_counter value the records' times count from."""
    run = LoadRun(url, api_key=None, timeout_s=60.0)
    cpu, wall = time.process_time(), time.perf_counter()
    run.run_point(0, profile, jobs, seed)
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    # an earlier generator (measured for comparison) has the same clock, unnamed
    return run.records, cpu_share, getattr(run, "origin_s", None) or run._origin


def ms(values: list[float], pct: float) -> float | None:
    value = percentile(values, pct)
    return round(value * 1000, 3) if value is not None else None


def overheads(records: list[RequestRecord], timings: dict[str, dict],
              origin_s: float) -> dict:
    """Client TTFT minus the server's body-read -> first-chunk time: on warm (kept-alive)
    connections, and what connecting adds on the first request of each connection. On warm
    connections it is split in two on the clock both processes share (perf_counter): sending
    (the client's send -> the server has read the body: the client's write and the server's
    own reading) and receiving (the server handed the first chunk to the kernel -> the client
    has parsed it: the client's alone)."""
    warm, cold, configured, sending, receiving = [], [], [], [], []
    for record in records:
        timing = timings.get(record.adapter)
        if not record.ok or record.ttft_s is None or timing is None:
            continue
        extra = record.ttft_s - (timing["first_chunk_s"] - timing["body_read_s"])
        (cold if timing["connection_request"] == 1 else warm).append(extra)
        configured.append(record.ttft_s - TTFT_MS / 1000)
        if timing["connection_request"] > 1:
            sent_s = origin_s + record.started_s
            sending.append(timing["body_read_s"] - sent_s)
            receiving.append(sent_s + record.ttft_s - timing["first_chunk_s"])
    return {
        "sending_ms_p50": ms(sending, 50), "sending_ms_p99": ms(sending, 99),
        "receiving_ms_p50": ms(receiving, 50), "receiving_ms_p99": ms(receiving, 99),
        "ttft_minus_server_ms_p50": ms(warm, 50), "ttft_minus_server_ms_p99": ms(warm, 99),
        "ttft_minus_configured_ms_p50": ms(configured, 50),
        "ttft_minus_configured_ms_p99": ms(configured, 99),
        "connects_count": len(cold), "ttft_minus_server_on_connect_ms_p50": ms(cold, 50),
    }


def pct_off(measured: float, expected: float) -> float:
    return round(100 * (measured / expected - 1), 3)


def rate_row(url: str, kind: str, rate: float, seconds: float, seed: int) -> dict:
    jobs = tagged_jobs(f"{kind}{rate:g}", max(20, round(rate * seconds)) + 1)
    records, cpu_share, origin_s = run_load(url, Profile(kind, rate), jobs, seed)
    sent = sorted(r.started_s for r in records)
    scheduled = sorted(r.scheduled_s for r in records)
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    drawn = (len(scheduled) - 1) / (scheduled[-1] - scheduled[0])
    lags = [r.started_s - r.scheduled_s for r in records]
    return {
        "arrivals": kind, "target_rate_per_s": rate, "requests_count": len(records),
        "errors_count": sum(not r.ok for r in records), "errors": error_kinds(records),
        "achieved_rate_per_s": round(achieved, 4), "scheduled_rate_per_s": round(drawn, 4),
        "achieved_vs_target_pct": pct_off(achieved, rate),
        "achieved_vs_schedule_pct": pct_off(achieved, drawn),
        "send_lag_ms_p50": ms(lags, 50), "send_lag_ms_p99": ms(lags, 99),
        "send_lag_ms_max": round(max(lags) * 1000, 3),
        "client_cpu_pct_of_one_core": round(100 * cpu_share, 1),
        **overheads(records, server_timings(url), origin_s),
    }


def ttft_row(url: str, concurrency: int, count: int) -> dict:
    jobs = tagged_jobs(f"c{concurrency}", count)
    records, cpu_share, origin_s = run_load(url, Profile("concurrency", concurrency), jobs,
                                            seed=0)
    return {
        "concurrency": concurrency, "requests_count": len(records),
        "errors_count": sum(not r.ok for r in records), "errors": error_kinds(records),
        "client_cpu_pct_of_one_core": round(100 * cpu_share, 1),
        **overheads(records, server_timings(url), origin_s),
    }


# --- verdict and report ------------------------------------------------------------------

def verdict(rates: list[dict], ttfts: list[dict]) -> dict:
    """Constant arrivals are held to the target; Poisson ones to the schedule drawn."""
    def rate_error(row: dict) -> float:
        key = "achieved_vs_target_pct" if row["arrivals"] == "constant" else (
            "achieved_vs_schedule_pct")
        return abs(row[key])

    return {
        "rate_within_1_pct": all(rate_error(r) < RATE_TARGET_PCT for r in rates),
        "ttft_overhead_p50_under_1_ms": all(
            r["ttft_minus_server_ms_p50"] is not None
            and r["ttft_minus_server_ms_p50"] < TTFT_TARGET_MS for r in ttfts),
        "no_errors": not any(r["errors_count"] for r in rates + ttfts),
    }


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "processor": platform.processor() or None}


def markdown(result: dict) -> str:
    info, server = result["machine"], result["server"]
    lines = [
        "# Load generator capacity", "",
        f"Timing server in its own process: TTFT {server['ttft_ms']} ms, ITL "
        f"{server['itl_ms']} ms, {server['output_tokens']} output tokens. "
        f"{info['cpu_count']} CPUs, {info['platform']}, Python {info['python']}; "
        f"{result['date']}{' (quick run)' if result['quick'] else ''}.", "",
        f"Targets: rate within {RATE_TARGET_PCT:g}% (Poisson: of the drawn schedule); under "
        f"{TTFT_TARGET_MS:g} ms added to TTFT at p50. Met: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["meets_targets"].items()),
        "", "## Rate holding (open loop)", "",
        "Send lag: sent - scheduled. TTFT - server: the client's TTFT minus the server's time "
        "from reading the body to flushing the first chunk, on kept-alive connections (the "
        "other requests opened a connection: connects).", "",
        "| arrivals | target req/s | requests | achieved req/s | vs target % | vs schedule % "
        "| send lag p50 ms | p99 ms | max ms | TTFT - server p50 ms | p99 ms | connects "
        "| client CPU % | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rate_holding"]:
        lines.append(
            f"| {r['arrivals']} | {r['target_rate_per_s']:g} | {r['requests_count']} | "
            f"{r['achieved_rate_per_s']} | {r['achieved_vs_target_pct']} | "
            f"{r['achieved_vs_schedule_pct']} | {r['send_lag_ms_p50']} | {r['send_lag_ms_p99']} "
            f"| {r['send_lag_ms_max']} | {r['ttft_minus_server_ms_p50']} | "
            f"{r['ttft_minus_server_ms_p99']} | {r['connects_count']} | "
            f"{r['client_cpu_pct_of_one_core']} | {r['errors_count']} |")
    lines += [
        "", "## TTFT overhead (closed loop)", "",
        "TTFT - server as above; on connect: the same for the first request of each "
        "connection. TTFT - configured: the client's TTFT minus the server's configured "
        "delay, over all requests.", "",
        "| concurrency | requests | TTFT - server p50 ms | p99 ms | TTFT - configured p50 ms "
        "| p99 ms | connects | on connect p50 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["ttft_overhead"]:
        lines.append(
            f"| {r['concurrency']} | {r['requests_count']} | {r['ttft_minus_server_ms_p50']} | "
            f"{r['ttft_minus_server_ms_p99']} | {r['ttft_minus_configured_ms_p50']} | "
            f"{r['ttft_minus_configured_ms_p99']} | {r['connects_count']} | "
            f"{r['ttft_minus_server_on_connect_ms_p50']} | {r['errors_count']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    process, url = start_server()
    try:
        rates = [rate_row(url, kind, rate, plan["rate_seconds"], seed=index)
                 for kind in ("constant", "poisson")
                 for index, rate in enumerate(plan["rates"])]
        ttfts = [ttft_row(url, concurrency, plan["ttft_requests"]) for concurrency in (1, 8)]
    finally:
        stop_server(process)
    result = {
        "benchmark": "client_capacity", "quick": args.quick,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(), "fingerprint": common.fingerprint(),
        "server": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "output_tokens": OUTPUT_TOKENS},
        "targets": {"rate_error_pct_max": RATE_TARGET_PCT, "ttft_overhead_ms_p50_max":
                    TTFT_TARGET_MS},
        "meets_targets": verdict(rates, ttfts),
        "rate_holding": rates, "ttft_overhead": ttfts,
    }
    name = "client_capacity_quick" if args.quick else "client_capacity"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
