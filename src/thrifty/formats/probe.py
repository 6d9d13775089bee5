"""The probe file, $THRIFTY_HOME/probe.json: this machine's measured memory bandwidth and matmul
rate. `thrifty doctor --probe` writes it (cost's `probe` task measures); the throughput model of
`thrifty cost` reads it to calibrate against this machine's own peaks.
"""

import datetime
from pathlib import Path

from thrifty.core import hardware, paths
from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json


def probe_path() -> Path:
    return paths.home() / "probe.json"


def save_probe(measured: dict) -> dict:
    """Keep a probe's measurements with the machine's name and the time they were taken."""
    record = {"hardware": hardware.machine_name(), "measured_at":
              datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **measured}
    write_json(probe_path(), record)
    return record


def load_probe() -> dict:
    if not probe_path().is_file():
        raise BadInput("This machine has not been probed yet, so the throughput model does not "
                       "know its memory bandwidth and matmul rate. Run `thrifty doctor --probe` "
                       "(about a minute) first.")
    return read_json(probe_path())
