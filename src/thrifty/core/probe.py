"""`thrifty doctor --probe`: measure this machine's memory bandwidth and matmul rate.

The probe runs in the compress engine (it needs torch) and is kept in $THRIFTY_HOME/probe.json,
so the throughput model can calibrate against this machine's own peaks.
"""

import datetime
from pathlib import Path

from thrifty.core import hardware, paths
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import read_json, write_json


def probe_path() -> Path:
    return paths.home() / "probe.json"


def machine_name(described: dict | None = None) -> str:
    hw = described or hardware.describe()
    if hw["gpus"]:
        return hw["gpus"][0]["name"]
    return f"{hw['cpu_model']} ({hw['cpu_cores']} cores)"


def run_probe(workdir: Path) -> dict:
    measured = run_in_engine("compress", "thrifty.core.worker", "probe", {}, workdir,
                             "probing memory bandwidth and matmul rate")
    record = {"hardware": machine_name(), "measured_at":
              datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **measured}
    write_json(probe_path(), record)
    return record


def load_probe() -> dict:
    if not probe_path().is_file():
        raise BadInput("This machine has not been probed yet, so the throughput model does not "
                       "know its memory bandwidth and matmul rate. Run `thrifty doctor --probe` "
                       "(about a minute) first.")
    return read_json(probe_path())
