"""Run records: every command that does work leaves a folder with what it did and found.

<runs>/<time>-<command>-<id>/
  config.json       the resolved configuration
  environment.json  versions, hardware, git revision, engines used
  result.json       schema-versioned result; metric names carry their unit
  logs/             worker logs
"""

import os
import re
import secrets
import subprocess
import sys
import time

from thrifty import __version__
from thrifty.core import engines, hardware, paths, tracking
from thrifty.core.files import write_json

SCHEMA = "thrifty.result"
SCHEMA_VERSION = 1

# A metric name ends with its unit, so that no reader has to guess (ms or s? GiB or GB?).
UNIT_SUFFIXES = (
    "_ms", "_s", "_bytes", "_gib", "_mib", "_tokens", "_per_s", "_usd", "_usd_per_month",
    "_count", "_ratio", "_pct", "_params", "_bits", "_per_param", "_usd_per_hour",
    "_usd_per_1m_tokens", "_bytes_per_token", "_nats", "_hours_per_month", "_kwh_per_month",
    "_kwh_per_1m_output_tokens",
)
DIMENSIONLESS = {"perplexity"}  # quantities with no unit; named as such


STATISTIC = re.compile(r"_(p\d+|mean|median|min|max|std)$")  # e.g. ttft_ms_p50


def check_metric_names(metrics: dict) -> None:
    for name in metrics:
        base = STATISTIC.sub("", name)
        # A name may be a unit alone ("usd_per_month"): it is checked with a leading "_".
        dimensionless = any(f"_{base}".endswith(f"_{d}") for d in DIMENSIONLESS)
        if not dimensionless and not f"_{base}".endswith(UNIT_SUFFIXES):
            raise ValueError(f"metric {name!r} does not end with a unit suffix {UNIT_SUFFIXES}")


class RunRecord:
    """A run folder; use as a context manager so that failures are recorded too."""

    def __init__(self, command: str, config: dict, engines_used: tuple[str, ...] = ()):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.command = command
        self.path = paths.runs_dir() / f"{stamp}-{command}-{secrets.token_hex(2)}"
        self.logs = self.path / "logs"
        self.logs.mkdir(parents=True)
        self._started = time.time()
        self._result: dict | None = None
        self._config = config
        write_json(self.path / "config.json", {"command": command, **config})
        write_json(self.path / "environment.json", fingerprint(engines_used))

    def __enter__(self) -> "RunRecord":
        return self

    def record(self, measured: dict, modelled: dict | None = None, details: dict | None = None):
        """Keep the result (written when the run ends); each figure is measured or modelled."""
        check_metric_names(measured)
        check_metric_names(modelled or {})
        self._result = {"measured": measured, "modelled": modelled or {}, "details": details or {}}

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status, error = "ok", None
        elif issubclass(exc_type, KeyboardInterrupt):
            status, error = "interrupted", "interrupted by the user"
        else:
            status, error = "failed", str(exc)
        finished = time.time()
        result = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "status": status,
            "error": error,
            "started_at": _iso(self._started),
            "finished_at": _iso(finished),
            "duration_s": round(finished - self._started, 3),
            **(self._result or {"measured": {}, "modelled": {}, "details": {}}),
        }
        write_json(self.path / "result.json", result)
        if tracking.tracking_uri():
            tracking.log_record(self.path, self.command, self._config, result)


def fingerprint(engines_used: tuple[str, ...] = ()) -> dict:
    """Versions, hardware and git revision: enough to tell two runs' conditions apart."""
    return {
        "thrifty_version": __version__,
        "git_revision": git_revision(),
        "argv": redact_argv(sys.argv),
        "hardware": hardware.describe(),
        "engines": {name: _engine_summary(name) for name in engines_used},
        "env": {k: ("***" if SECRET_NAME.search(k) else v) for k, v in os.environ.items()
                if re.match(r"^(THRIFTY_|VLLM_|CUDA_VISIBLE|OMP_NUM|MALLOC_|LD_PRELOAD)", k)},
    }


# "TOKEN" but not "TOKENS": --hf-token is a secret, --max-tokens a count worth keeping
SECRET_NAME = re.compile(r"KEY|TOKEN(?!S)|SECRET|PASSWORD", re.IGNORECASE)


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the values of secret options (--api-key ...) masked."""
    redacted, hide_next = [], False
    for arg in argv:
        if hide_next:
            redacted.append("***")
            hide_next = False
        elif arg.startswith("--") and SECRET_NAME.search(arg):
            name, sep, _ = arg.partition("=")
            redacted.append(f"{name}=***" if sep else arg)
            hide_next = not sep
        else:
            redacted.append(arg)
    return redacted


def git_revision() -> str | None:
    """The git commit of thrifty's source tree (with '-dirty' if it has local changes)."""
    source = paths.package_dir()
    try:
        rev = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _engine_summary(name: str) -> dict:
    info = engines.status(name)
    return {k: info.get(k) for k in ("state", "python", "managed", "versions")}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))
