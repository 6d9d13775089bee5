"""Summarises the load generator's added TTFT before and after a change, from client_capacity runs.

Reads benchmarks/results/client_overhead_runs/{before,after}_run{N}.json (each a copy of
client_capacity_quick.json, the runs interleaved before, after, before, after, ...) and writes
benchmarks/results/client_overhead_compare.json and .md: the closed-loop 'TTFT - server' p50
and p99 at concurrency 1 and 8 per run, and their median over the runs of each side.

Run: .venv/bin/python benchmarks/client_overhead_compare.py [--before-rev REV --after-rev REV]
"""

import argparse
import json
import platform
import statistics
from pathlib import Path

import common

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "client_overhead_runs"
SIDES = ("before", "after")
CONCURRENCIES = (1, 8)
KEYS = {"p50": "ttft_minus_server_ms_p50", "p99": "ttft_minus_server_ms_p99"}
TARGET_P50_MS = 1.0
BEFORE_REV = "5afab018afe9c0b215be8e641b15985774f97226"  # loadgen parsing the events itself
AFTER_REV = "e261cdc3e8795a9c227de7187c8af0b8c0b01df0"  # formats/openai_api.py's parser


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def read_runs(side: str) -> list[dict]:
    paths = sorted(RUNS.glob(f"{side}_run*.json"))
    if not paths:
        raise SystemExit(f"no {side}_run*.json in {RUNS}")
    runs = []
    for path in paths:
        data = json.loads(path.read_text())
        row = {"file": path.name, "date": data["date"], "machine": data["machine"],
               "meets_targets": data["meets_targets"],
               # the revision that produced the run (client_capacity records it since it
               # records the fingerprint; older run files have none)
               "git_revision": data.get("fingerprint", {}).get("git_revision")}
        for entry in data["ttft_overhead"]:
            if entry["concurrency"] in CONCURRENCIES:
                for name, key in KEYS.items():
                    row[f"c{entry['concurrency']}_{name}_ms"] = entry[key]
                row[f"c{entry['concurrency']}_errors_count"] = entry["errors_count"]
        runs.append(row)
    return runs


def medians(runs: list[dict]) -> dict:
    out = {}
    for concurrency in CONCURRENCIES:
        for name in KEYS:
            values = [r[f"c{concurrency}_{name}_ms"] for r in runs
                      if r.get(f"c{concurrency}_{name}_ms") is not None]
            out[f"c{concurrency}_{name}_ms"] = (round(statistics.median(values), 3)
                                                if values else None)
    return out


def markdown(result: dict) -> str:
    hw, revs = result["hardware"], result["revisions"]
    lines = [
        "# Load generator: added TTFT before and after one streaming client", "",
        f"`{result['command']}` on one machine, {len(result['runs']['before'])} runs each "
        f"side, interleaved (before, after, ...). Before: {revs['before']}; after: "
        f"{revs['after']}. {hw['cpu_count']} CPUs ({hw['cpu_model']}), "
        f"{hw['platform']}, Python {hw['python']}.", "",
        "TTFT - server: the client's TTFT minus the timing server's own body-read -> first-chunk "
        "time, closed loop, kept-alive connections (ms).", "",
        "## Median over runs", "",
        "| side | c1 p50 | c1 p99 | c8 p50 | c8 p99 |", "|---|---|---|---|---|",
    ]
    for side in SIDES:
        m = result["median"][side]
        lines.append(f"| {side} | {m['c1_p50_ms']} | {m['c1_p99_ms']} | {m['c8_p50_ms']} | "
                     f"{m['c8_p99_ms']} |")
    lines += ["", f"Target: p50 under {TARGET_P50_MS:g} ms after the change: "
              f"{'met' if result['after_p50_under_target'] else 'NOT met'}.", "",
              "## Per run", "",
              "| side | file | date | c1 p50 | c1 p99 | c8 p50 | c8 p99 | errors |",
              "|---|---|---|---|---|---|---|---|"]
    for side in SIDES:
        for r in result["runs"][side]:
            errors = sum(r.get(f"c{c}_errors_count", 0) for c in CONCURRENCIES)
            lines.append(f"| {side} | {r['file']} | {r['date']} | {r['c1_p50_ms']} | "
                         f"{r['c1_p99_ms']} | {r['c8_p50_ms']} | {r['c8_p99_ms']} | {errors} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-rev", default=BEFORE_REV)
    parser.add_argument("--after-rev", default=AFTER_REV)
    args = parser.parse_args()
    runs = {side: read_runs(side) for side in SIDES}
    machine = runs["after"][0]["machine"]
    result = {
        "benchmark": "client_overhead_compare",
        "command": "benchmarks/client_capacity.py --quick",
        "revisions": {"before": args.before_rev, "after": args.after_rev},
        "hardware": {**machine, "cpu_model": cpu_model()},
        "python": machine["python"],
        "fingerprint": common.fingerprint(),  # of this summary's run
        "runs": {side: [{k: v for k, v in r.items() if k != "machine"} for r in runs[side]]
                 for side in SIDES},
        "median": {side: medians(runs[side]) for side in SIDES},
    }
    result["after_p50_under_target"] = all(
        result["median"]["after"][f"c{c}_p50_ms"] is not None
        and result["median"]["after"][f"c{c}_p50_ms"] < TARGET_P50_MS for c in CONCURRENCIES)
    (RESULTS / "client_overhead_compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "client_overhead_compare.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
