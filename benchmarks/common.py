"""Shared by the benchmark scripts (run from the repository root as `python benchmarks/X.py`)."""

import json
import subprocess
import sys


def thrifty(*args: str) -> dict:
    """Run `thrifty ... --json` as a user would and return its JSON; stop the script on failure."""
    done = subprocess.run([sys.executable, "-m", "thrifty", *args, "--json"],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"thrifty {' '.join(args)} failed")
    return json.loads(done.stdout)
