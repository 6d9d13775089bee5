"""MLflow tracking against a real MLflow tracking server on 127.0.0.1: every run record is
logged with its parameters, unit-named metrics, cost tags and files, and a server that does
not answer costs nothing but a warning."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from thrifty.core import tracking

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store; its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with (folder / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while tracking.answers(uri, timeout_s=1):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
        server.terminate()
        server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_cost_run_is_logged_with_params_metrics_tags_and_files(isolated_home, run_cli,
                                                                 mlflow_server, monkeypatch):
    monkeypatch.setenv(tracking.URI_ENV, "")  # restored after the CLI sets it
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "thrifty-test-cost")
    result = run_cli("--mlflow", mlflow_server, "cost", "plan", "llama-3.1-8b", "--gpu", "l4",
                     "--requests-per-day", "100000", "--json")
    assert result.exit_code == 0, result.output
    folder = Path(json.loads(result.stdout)["run"])  # stdout holds the JSON alone
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("thrifty-test-cost")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == folder.name and run.info.status == "FINISHED"
    assert run.data.params["models"] == '["llama-3.1-8b"]'
    assert run.data.params["traffic.requests_per_day"] == "100000.0"
    recorded = json.loads((folder / "result.json").read_text())["modelled"]
    assert run.data.metrics["modelled.usd_per_month"] == pytest.approx(recorded["usd_per_month"])
    assert run.data.tags["thrifty.command"] == "cost"
    assert run.data.tags["thrifty.cost.gpu"] == "l4"
    assert run.data.tags["thrifty.cost.price_date"].startswith("20")
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "environment.json", "result.json"} <= files


def test_a_tracking_server_that_does_not_answer_loses_nothing(isolated_home, run_cli,
                                                             monkeypatch):
    monkeypatch.setenv(tracking.URI_ENV, "")
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_cli("--mlflow", dead, "cost", "plan", "llama-3.1-8b", "--gpu", "l4",
                     "--requests-per-day", "100000", "--json")
    assert result.exit_code == 0, result.output
    assert f"MLflow tracking at {dead} failed" in " ".join(result.stderr.split())
    folder = Path(json.loads(result.stdout)["run"])
    assert json.loads((folder / "result.json").read_text())["status"] == "ok"


def test_parameters_are_flattened_and_cut_to_mlflows_limit():
    params = tracking.flat({"traffic": {"input_tokens": 128}, "note": "x" * 7000,
                            "models": ["a", "b"]})
    assert params == {"traffic.input_tokens": "128", "note": "x" * 6000,
                      "models": '["a", "b"]'}


def test_only_numbers_become_metrics_and_modelled_ones_say_so():
    assert tracking.metrics_of({"measured": {"eval_s": 2, "label": "x", "ok_count": True},
                                "modelled": {"usd_per_month": 10.5}}) == {
        "eval_s": 2.0, "modelled.usd_per_month": 10.5}


def test_health_check_reads_a_real_answer(mlflow_server):
    with urllib.request.urlopen(mlflow_server + "/health", timeout=5) as answer:
        assert answer.status == 200
    assert tracking.answers(mlflow_server) is None
