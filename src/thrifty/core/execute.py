"""Run a job in an engine from the CLI: build the engine if needed, show progress."""

from pathlib import Path

from thrifty.core import engines, jobs
from thrifty.core.progress import ProgressDisplay


def ensure_engine(name: str) -> str:
    """The engine's interpreter; builds the engine (with a progress display) when missing."""
    if engines.status(name)["state"] == "ready":
        return engines.python_for(name)
    with ProgressDisplay(f"setting up engine {name}") as display:
        return engines.ensure(name, display.handle)


def run_in_engine(engine: str, module: str, task: str, params: dict, workdir: Path,
                  title: str, env: dict | None = None, launcher: list[str] | None = None) -> dict:
    python = ensure_engine(engine)
    with ProgressDisplay(title) as display:
        return jobs.run_job(python, module, task, params, workdir, display.handle, env=env,
                            launcher=launcher)
