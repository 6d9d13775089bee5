"""Run the real thrifty console entry point from integration tests."""

import json
import subprocess
import sys


def thrifty(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real console entry point, as a user would."""
    done = subprocess.run([sys.executable, "-m", "thrifty", *map(str, args)],
                          capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"thrifty {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def thrifty_json(*args: str) -> dict:
    return json.loads(thrifty(*args, "--json").stdout)
