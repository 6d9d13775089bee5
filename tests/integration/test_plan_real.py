"""`thrifty plan` end to end on the real SmolLM2-135M with a demo adapter and a reduced
profile: real quantize, eval, vLLM bench, calibration and cost stages; the report viewed in
Chromium; the manifests checked against Kubernetes' schemas; resume and changed inputs."""

import json

import kubernetes_validate
import pytest
import yaml
from cli_helpers import thrifty, thrifty_json
from mlflow import MlflowClient
from test_reports_render import CHROMIUM, run_chromium

from thrifty.formats import plan as plan_format
from thrifty.serve import demo_adapters

PROFILE = ("--requests-per-day", "1000000", "--input-tokens", "128", "--output-tokens", "32",
           "--slo", "ttft_ms=500,tpot_ms=50", "--variants", "bf16,w8a8-rtn",
           "--gpus", "l4,h100-sxm", "--eval-tokens", "512", "--bench-requests", "4",
           "--bench-concurrency", "1")


@pytest.fixture(scope="module")
def planned(tmp_path_factory, mlflow_server):
    out = tmp_path_factory.mktemp("plan") / "p"
    history = demo_adapters.default_dir() / "history"
    decided = thrifty_json("--mlflow", mlflow_server, "plan", "smollm2-135m", "--adapter",
                           f"history={history}", *PROFILE, "--quality-floor", "top1=80",
                           "--emit", "production-stack,kserve,k8s", "--out", out)
    return out, decided


def test_plan_recommends_and_explains_every_option(planned):
    out, decided = planned
    assert plan_format.load(out) == {k: v for k, v in decided.items() if k != "files"}
    rec = decided["recommendation"]
    assert rec["variant"] in ("bf16", "w8a8-rtn") and rec["gpu"] in ("l4", "h100-sxm")
    assert rec["usd_per_month"] > 0 and rec["energy"]["kwh_per_1m_output_tokens"] > 0
    assert rec["figures"].startswith("modelled")
    options = decided["options"]
    assert len(options) == 4 and options[0]["excluded_by"] == ""
    assert all(o["why"] for o in options)
    measured = {v["name"]: v for v in decided["variants"]}
    assert measured["w8a8-rtn"]["quality"]["top1_agreement_pct"] > 80
    assert all(v["speed_here"]["measured"] for v in measured.values())
    assert {s["name"] for s in decided["stages"]} == {
        "quantize w8a8-rtn", "eval w8a8-rtn", "bench bf16", "bench w8a8-rtn", "calibrate",
        "cost"}


def test_plan_is_one_mlflow_parent_run_with_its_stages_as_children(planned, mlflow_server):
    _, decided = planned
    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(decided["mlflow_run_id"])
    assert parent.data.tags["thrifty.command"] == "plan" and parent.info.status == "FINISHED"
    assert parent.data.metrics["modelled.usd_per_month"] == pytest.approx(
        decided["recommendation"]["usd_per_month"])
    price = decided["recommendation"]["price"]
    assert parent.data.tags["thrifty.cost.price_date"] == price["date"]
    assert parent.data.tags["thrifty.cost.price_source"] == price["source"]
    assert {"plan.json", "plan.md", "plan.html"} <= {
        f.path for f in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    commands = sorted(c.data.tags["thrifty.command"] for c in children)
    assert commands.count("bench") == 2 and {"quantize", "eval", "cost"} <= set(commands)


def test_plan_manifests_validate(planned):
    out, decided = planned
    k8s = list(yaml.safe_load_all((out / "manifests" / "kubernetes.yaml").read_text()))
    for document in k8s:
        kubernetes_validate.validate(document, "1.33", strict=True)
    args = k8s[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = decided["serving"]["flags"]
    assert args[args.index("--max-lora-rank") + 1] == str(flags["max_lora_rank"])
    assert "history=/models/adapters/history" in args
    assert (out / "manifests" / "kserve-llminferenceservice.yaml").is_file()
    assert (out / "manifests" / "production-stack-values.yaml").is_file()


def test_deploy_render_writes_a_plans_manifests_elsewhere(planned, tmp_path):
    out, decided = planned
    rendered = thrifty_json("deploy", "render", out, "--target", "k8s,kserve", "--out",
                            tmp_path, "--model-uri", "pvc://models/prod/m")
    assert sorted(rendered["files"]) == sorted(
        str(tmp_path / name) for name in ("kubernetes.yaml", "kserve-llminferenceservice.yaml"))
    (kserve,) = yaml.safe_load_all((tmp_path / "kserve-llminferenceservice.yaml").read_text())
    assert kserve["spec"]["model"]["uri"] == "pvc://models/prod/m"
    assert kserve["spec"]["replicas"] == decided["recommendation"]["replicas"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium: scripts/ensure_chromium.sh")
def test_plan_report_is_viewed_in_chromium(planned, tmp_path):
    out, decided = planned
    done = run_chromium(tmp_path, "--dump-dom", (out / "plan.html").as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stdout.split())
    assert f"Serve {decided['recommendation']['variant']} on" in text
    assert text.count("<tr>") >= 1 + len(decided["options"]) + len(decided["variants"])


def test_resume_reuses_stages_and_reruns_only_what_changed(planned, unused_port):
    out, _ = planned
    history = demo_adapters.default_dir() / "history"
    args = ("plan", "smollm2-135m", "--adapter", f"history={history}", *PROFILE, "--out", out,
            "--resume")
    dead = f"http://127.0.0.1:{unused_port}"
    done = thrifty("--mlflow", dead, *args, "--json")  # tracking fails; the plan does not
    assert f"MLflow tracking at {dead} failed" in " ".join(done.stderr.split())
    again = json.loads(done.stdout)
    assert all(s["cached"] for s in again["stages"]) and again["recommendation"]
    impossible = list(args)
    impossible[impossible.index("ttft_ms=500,tpot_ms=50")] = "ttft_ms=1,tpot_ms=0.01"
    done = thrifty(*impossible, "--emit", "k8s", "--json")
    decided = json.loads(done.stdout)
    assert "re-running cost: its command line changed" in " ".join(done.stderr.split())
    assert [s["name"] for s in decided["stages"] if not s["cached"]] == ["cost"]
    assert decided["recommendation"] is None and "miss the SLO" in decided["nothing_meets"]
    assert "TPOT" in decided["nothing_meets"]  # the nearest option's modelled latency
    assert "there is nothing to deploy" in decided["manifests_skipped"]
    assert (out / "plan.md").read_text().count("No option meets every constraint") == 1
