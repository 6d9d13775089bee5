"""Where thrifty keeps engines, prepared models, corpora and run records."""

import os
from pathlib import Path


def home() -> Path:
    """The thrifty home folder: $THRIFTY_HOME, else ~/.cache/thrifty."""
    configured = os.environ.get("THRIFTY_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser().resolve() / "thrifty"


def engines_dir() -> Path:
    return home() / "engines"


def models_dir() -> Path:
    return home() / "models"


def corpora_dir() -> Path:
    return home() / "corpora"


def adapters_dir() -> Path:
    return home() / "adapters"


def runs_dir() -> Path:
    """Run records: $THRIFTY_RUNS, else <home>/runs."""
    configured = os.environ.get("THRIFTY_RUNS")
    return Path(configured).expanduser().resolve() if configured else home() / "runs"


def package_dir() -> Path:
    """The folder of the thrifty package itself (engines import thrifty from here)."""
    return Path(__file__).resolve().parent.parent
