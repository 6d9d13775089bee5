"""Run a job in an engine from the CLI: build the engine if needed, show progress."""

from pathlib import Path

from thrifty.core import engines, jobs
from thrifty.core.progress import ProgressDisplay
from thrifty.core.tasks import Task


def ensure_engine(name: str) -> str:
    """The engine's interpreter; builds the engine (with a progress display) when missing."""
    if engines.status(name)["state"] == "ready":
        return engines.python_for(name)
    with ProgressDisplay(f"setting up engine {name}") as display:
        return engines.ensure(name, display.handle)


def run_in_engine(task: Task, params: dict, workdir: Path, title: str, env: dict | None = None,
                  launcher: list[str] | None = None, engine: str | None = None) -> dict:
    """Run `task` in its engine (or in `engine`, for a model registered with another one)."""
    python = ensure_engine(engine or task.engine)
    with ProgressDisplay(title) as display:
        return jobs.run_job(python, task.module, task.name, params, workdir, display.handle,
                            env=env, launcher=launcher)
