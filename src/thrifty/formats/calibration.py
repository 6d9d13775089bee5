"""The calibration file: throughput-model efficiencies fitted to a bench run.

`thrifty cost calibrate` writes it under $THRIFTY_HOME/calibrations (cost/calibrate.py);
`thrifty cost` and `cost check` read it with `load`. Kind `thrifty.calibration`, version 1.
"""

import datetime
from pathlib import Path

from thrifty.core import paths
from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json

KIND, VERSION = "thrifty.calibration", 1


def calibrations_dir() -> Path:
    return paths.home() / "calibrations"


def default_path(hardware_name: str, precision: str) -> Path:
    return calibrations_dir() / f"{_slug(hardware_name)}-{precision}.json"


def save(content: dict, target: Path) -> Path:
    """Write a calibration (hardware, model, precision, bench_run, efficiency, fit)."""
    write_json(target, {
        "kind": KIND, "version": VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **content})
    return target


def load(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInput(f"The calibration file {path} does not exist. Make one with "
                       "`thrifty cost calibrate RUN` from a bench run.")
    data = read_json(path)
    if data.get("kind") != KIND:
        raise BadInput(f"{path} is not a thrifty calibration file (from `thrifty cost "
                       "calibrate`).")
    if data.get("version", 1) > VERSION:
        raise BadInput(f"{path} was written by a newer thrifty (calibration version "
                       f"{data['version']}); upgrade thrifty or calibrate again.")
    return data


def saved() -> list[dict]:
    folder = calibrations_dir()
    return [load(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]
