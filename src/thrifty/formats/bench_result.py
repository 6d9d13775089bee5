"""The bench result: the `bench` section of a `thrifty bench` run's result.json.

`thrifty bench` writes it (benchmark/run.py); `bench compare`, `cost calibrate` and `cost check`
read it through `load_bench`, the one loader. Its version is `bench_schema_version`.
"""

import json
from pathlib import Path

from thrifty.core.errors import BadInput

BENCH_SCHEMA_VERSION = 1


def load_bench(ref: str) -> tuple[str, dict]:
    """A bench dict from a run folder, its result.json, or a bench JSON file."""
    path = Path(ref).expanduser()
    if path.is_dir():
        path = path / "result.json"
    if not path.is_file():
        raise BadInput(f"{ref} is neither a `thrifty bench` run folder nor a result.json file. "
                       "Run folders are listed under $THRIFTY_HOME/runs (thrifty bench prints "
                       "its own).")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc}).") from None
    bench = data.get("details", {}).get("bench") if "details" in data else data
    if not isinstance(bench, dict) or "bench_schema_version" not in bench:
        raise BadInput(f"{path} is not the result of `thrifty bench` (it has no bench section; "
                       f"its command is {data.get('command')!r}).")
    if bench["bench_schema_version"] > BENCH_SCHEMA_VERSION:
        raise BadInput(f"{path} was written by a newer thrifty (bench schema version "
                       f"{bench['bench_schema_version']}; this one reads up to "
                       f"{BENCH_SCHEMA_VERSION}). Upgrade thrifty to read it.")
    return str(path.parent if path.name == "result.json" else path), bench
