"""Progress bars on stderr for engine builds and worker jobs, driven by their events."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr = Console(stderr=True)


class ProgressDisplay:
    """One bar per stage; 'status' events set the text shown beside the current bar."""

    def __init__(self, title: str):
        self.title = title
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[status]}"),
            console=stderr,
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._current: int | None = None

    def __enter__(self) -> "ProgressDisplay":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "step":  # engine build steps: one bar per engine
            stage = f"engine {event['engine']}"
            self._update(stage, event["done"], event["total"], "steps", event["label"])
        elif kind == "progress":
            stage = event["stage"]
            self._update(stage, event["done"], event.get("total"), event.get("unit", ""), "")
        elif kind == "status" and self._current is not None:
            self._progress.update(self._current, status=event["text"])
        elif kind == "message":
            self._progress.console.print(event["text"])

    def _update(self, stage: str, done: int, total: int | None, unit: str, status: str) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=total, unit=unit,
                                                          status=status)
        task = self._tasks[stage]
        self._current = task
        self._progress.update(task, completed=done, total=total, status=status)
