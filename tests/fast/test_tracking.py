"""MLflow tracking against a real MLflow tracking server on 127.0.0.1: every run record is
logged with its parameters, unit-named metrics, cost tags and files, and a server that does
not answer costs nothing but a warning."""

import json
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from thrifty.core import tracking


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
    for name in ("usd_per_month", "usd_per_1m_tokens", "gpu_hours_per_month",
                 "energy_kwh_per_1m_output_tokens"):
        assert run.data.metrics[f"modelled.{name}"] == pytest.approx(recorded[name])
    assert run.data.tags["thrifty.command"] == "cost"
    assert run.data.tags["thrifty.cost.gpu"] == "l4"
    assert run.data.tags["thrifty.cost.price_date"].startswith("20")
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "environment.json", "result.json"} <= files


def test_a_tracking_server_that_does_not_answer_loses_nothing(isolated_home, run_cli,
                                                             monkeypatch, unused_port):
    monkeypatch.setenv(tracking.URI_ENV, "")
    dead = f"http://127.0.0.1:{unused_port}"
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
