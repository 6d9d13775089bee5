"""MLflow tracking of run records: the one module that imports mlflow (the optional extra
`thrifty[mlflow]`), and only when a tracking URI is set (`thrifty --mlflow URI ...` or
THRIFTY_MLFLOW_URI).

Each finished run record becomes an MLflow run in the experiment THRIFTY_MLFLOW_EXPERIMENT
(default "thrifty"): its configuration as parameters, its measured and modelled figures as
metrics (their unit-suffixed names kept), cost metadata as tags, and the run folder as
artifacts. A run started under a plan (THRIFTY_MLFLOW_PARENT_RUN_ID) is its child. Tracking
never fails a command: a server that does not answer is reported and the run record stays.
"""

import contextlib
import importlib.util
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.progress import stderr

URI_ENV, PARENT_ENV, EXPERIMENT_ENV = ("THRIFTY_MLFLOW_URI", "THRIFTY_MLFLOW_PARENT_RUN_ID",
                                       "THRIFTY_MLFLOW_EXPERIMENT")
PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
BATCH = 100  # MLflow's limit on parameters (and tags) per batch


def tracking_uri() -> str | None:
    return os.environ.get(URI_ENV) or None


def check_client() -> None:
    """Refuse --mlflow before any work when the client is not installed."""
    if importlib.util.find_spec("mlflow") is None:
        raise BadInput("MLflow tracking needs the MLflow client, which is not installed: run "
                       "`pip install 'thrifty[mlflow]'`, or drop --mlflow / THRIFTY_MLFLOW_URI.")


def answers(uri: str, timeout_s: float = 3.0) -> str | None:
    """None if the tracking server answers its health check, else why not."""
    if not uri.startswith(("http://", "https://")):
        return None  # a local file store or database needs no server
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except Exception as exc:  # noqa: BLE001  (a malformed URI too: tracking never fails a run)
        return str(getattr(exc, "reason", exc)) or type(exc).__name__


def flat(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested configuration as MLflow parameters: dotted names, JSON values, within limits."""
    params = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            params.update(flat(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            params[name] = text[:PARAM_LENGTH]
    return params


def metrics_of(result: dict) -> dict[str, float]:
    """Numeric measured and modelled figures; modelled ones are prefixed 'modelled.'."""
    metrics = {}
    for kind in ("measured", "modelled"):
        for name, value in (result.get(kind) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[name if kind == "measured" else f"modelled.{name}"] = float(value)
    return metrics


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """MLflow prints "View run ... at: URL" on stdout when a run ends; stdout belongs to the
    command's own output (--json), so MLflow's lines go to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def start_parent(name: str, params: dict) -> str | None:
    """Open a parent run (a plan) whose children are the runs started below it; its id, or None
    when tracking is off or failed."""
    uri = tracking_uri()
    if not uri:
        return None
    why = answers(uri)
    if why:
        _failed(uri, why)
        return None
    try:
        client, experiment = _client(uri)
        run = client.create_run(experiment, run_name=name, tags={"thrifty.command": "plan"})
        _log_params(client, run.info.run_id, flat(params))
        return run.info.run_id
    except Exception as exc:  # noqa: BLE001  (tracking must not fail the command)
        _failed(uri, exc)
        return None


def finish_parent(run_id: str, metrics: dict[str, float], tags: dict[str, str],
                  files: list[Path], ok: bool) -> None:
    uri = tracking_uri()
    try:
        with _quiet_stdout():
            client, _ = _client(uri)
            _log(client, run_id, metrics, tags, files)
            client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
    except Exception as exc:  # noqa: BLE001
        _failed(uri, exc)


def log_record(folder: Path, command: str, config: dict, result: dict) -> None:
    """Log one finished run record (called by RunRecord when tracking is on)."""
    uri = tracking_uri()
    why = answers(uri)
    if why:
        _failed(uri, why)
        return
    try:
        client, experiment = _client(uri)
        tags = {"thrifty.command": command, "thrifty.status": result["status"],
                **cost_tags(result)}
        parent = os.environ.get(PARENT_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        with _quiet_stdout():
            run = client.create_run(experiment, run_name=folder.name, tags=tags)
            _log_params(client, run.info.run_id, flat(config))
            _log(client, run.info.run_id, metrics_of(result), {}, folder)
            client.set_terminated(run.info.run_id, "FINISHED" if result["status"] == "ok"
                                  else "FAILED")
    except Exception as exc:  # noqa: BLE001
        _failed(uri, exc)


def cost_tags(result: dict) -> dict[str, str]:
    """The best cost option's GPU and price source and date, where the run costed options."""
    options = ((result.get("details") or {}).get("cost") or {}).get("options") or []
    priced = [o for o in options if o.get("price")]
    if not priced:
        return {}
    best = priced[0]
    return {"thrifty.cost.gpu": best["gpu"], "thrifty.cost.price_provider":
            best["price"]["provider"], "thrifty.cost.price_date": best["price"]["date"],
            "thrifty.cost.price_source": best["price"]["source"][:PARAM_LENGTH]}


def _client(uri: str):
    # Fail fast instead of MLflow's default minutes of retries against a dead server.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get(EXPERIMENT_ENV, "thrifty")
    experiment = client.get_experiment_by_name(name)
    return client, (experiment.experiment_id if experiment else client.create_experiment(name))


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[start:start + BATCH])


def _log(client, run_id: str, metrics: dict[str, float], tags: dict[str, str],
         artifacts: Path | list[Path]) -> None:
    """Metrics and tags, then a folder's files (a run record) or the files listed."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    if isinstance(artifacts, Path):
        client.log_artifacts(run_id, str(artifacts))
    else:
        for path in artifacts:
            client.log_artifact(run_id, str(path))


def _failed(uri: str, why: object) -> None:
    stderr.print(f"[yellow]warning:[/] MLflow tracking at {uri} failed ({why}); the run "
                 "record on disk is complete, and nothing else was affected.")
