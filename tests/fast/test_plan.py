"""`thrifty plan`'s decision on real cost output, its stage cache, its manifests checked against
Kubernetes' schemas, and every input refused before a stage starts."""

import json

import kubernetes_validate
import pytest
import yaml
from safetensors_files import LLAMA, make_adapter, make_base

from thrifty.core.errors import BadInput
from thrifty.plan import config as plan_config
from thrifty.plan import decide, deploy, manifest_models, manifests, report
from thrifty.plan.command import prepare_folder
from thrifty.plan.stages import STATE_FILE, Stage, StageRunner

QUALITY = {"bf16": {"kld_mean": 0.0, "top1_agreement_pct": 100.0, "perplexity_delta_pct": 0.0},
           "w8a8": {"kld_mean": 0.02, "top1_agreement_pct": 93.0, "perplexity_delta_pct": 1.5},
           "w4a16": {"kld_mean": 0.2, "top1_agreement_pct": 80.0, "perplexity_delta_pct": 9.0}}


def costed(run_cli, *extra: str) -> list[dict]:
    """`thrifty cost plan` of Llama-3.1-8B's three variants; each row's model named after its
    variant, as the plan's checkpoints are."""
    result = run_cli("cost", "plan", "llama-3.1-8b", "--variants", "bf16,w8a8,w4a16",
                     "--gpu", "l4,l40s,h100-sxm", "--requests-per-day", "200000", "--json",
                     *extra)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["options"]
    return [{**row, "model": row["variant"]} for row in rows]


VARIANT_OF = {v: v for v in QUALITY}


def test_the_recommendation_is_the_cheapest_option_above_the_floor(isolated_home, run_cli):
    floor = plan_config.parse_floor("top1=90")
    best, judged = decide.judge(costed(run_cli), VARIANT_OF, QUALITY, floor, None)
    served = [o for o in judged if o["usd_per_month"] is not None]
    allowed = [o for o in served if o["plan_variant"] != "w4a16"]
    assert best["usd_per_month"] == min(o["usd_per_month"] for o in allowed)
    assert judged[0] is best and best["excluded_by"] == ""
    below = [o for o in judged if o["plan_variant"] == "w4a16" and o["usd_per_month"]]
    assert below and all(o["excluded_by"] == "quality" for o in below)
    assert "top-1 agreement 80.0% < 90% (10.0 points short)" in below[0]["why"]
    others = [o for o in allowed if o is not best]
    assert all(o["excluded_by"] == "costlier" and "more than the recommendation" in o["why"]
               for o in others if o["usd_per_month"] > best["usd_per_month"])


def test_a_budget_below_every_option_says_by_how_much(isolated_home, run_cli):
    best, judged = decide.judge(costed(run_cli), VARIANT_OF, QUALITY,
                                plan_config.QualityFloor(), 10.0)
    assert best is None
    cheapest = min(o["usd_per_month"] for o in judged if o["usd_per_month"])
    text = decide.why_nothing(judged, plan_config.QualityFloor(), 10.0)
    assert "the budget ($10/month)" in text and f"${cheapest - 10:,.0f} over" in text


def test_an_slo_no_option_meets_names_the_slo(isolated_home, run_cli):
    rows = costed(run_cli, "--slo", "ttft_ms=0.5,tpot_ms=0.1")
    best, judged = decide.judge(rows, VARIANT_OF, QUALITY, plan_config.QualityFloor(), None)
    assert best is None and {o["excluded_by"] for o in judged} <= {"slo", "fit"}
    assert "miss the SLO" in decide.why_nothing(judged, plan_config.QualityFloor(), None)


def test_a_floor_no_variant_meets_names_the_closest(isolated_home, run_cli):
    floor = plan_config.parse_floor("kld=0.001")
    quality = {**QUALITY, "bf16": {**QUALITY["bf16"], "kld_mean": 0.01}}
    best, judged = decide.judge(costed(run_cli), VARIANT_OF, quality, floor, None)
    text = decide.why_nothing(judged, floor, None)
    assert best is None and "quality floor (KLD <= 0.001)" in text and "10.0x the limit" in text


@pytest.mark.parametrize("text, message", [
    ("top1=95,top1=90", "each at most once"),
    ("speed=2", "is not one of"),
    ("top1=120", "not a percentage"),
])
def test_bad_quality_floors_are_refused(text, message):
    with pytest.raises(BadInput, match=message):
        plan_config.parse_floor(text)


def test_unknown_variant_gets_a_did_you_mean():
    with pytest.raises(BadInput, match="Did you mean 'w4a16-gptq'"):
        plan_config.parse_variants("bf16,w4a16-gpt")


def test_unknown_gpu_gets_a_did_you_mean():
    with pytest.raises(BadInput, match="Did you mean 'h100-sxm'"):
        plan_config.check_gpus(("h100-sxn",), {"h100-sxm": [], "l4": []})


def test_stages_are_reused_on_resume_and_rerun_when_their_inputs_change(tmp_path,
                                                                        isolated_home, capsys):
    first = [Stage("gpus", ["gpus", "--gpu", "l4"]), Stage("after", ["gpus"], after=("gpus",))]
    runner = StageRunner(tmp_path, first, resume=False, quiet=True)
    results = runner.run_all()
    assert [g["id"] for g in results["gpus"]["gpus"]] == ["l4"]
    again = StageRunner(tmp_path, first, resume=True, quiet=True)
    again.run_all()
    assert all(t["cached"] for t in again.timings.values())
    changed = [Stage("gpus", ["gpus", "--gpu", "t4"]), Stage("after", ["gpus"], after=("gpus",))]
    third = StageRunner(tmp_path, changed, resume=True, quiet=True)
    assert [g["id"] for g in third.run_all()["gpus"]["gpus"]] == ["t4"]
    assert third.changed == ["gpus", "after"]
    said = " ".join(capsys.readouterr().err.split())
    assert "re-running gpus: its command line changed: gpus --gpu l4 -> gpus --gpu t4" in said
    assert "re-running after: gpus changed" in said
    assert json.loads((tmp_path / STATE_FILE).read_text())["gpus"]["argv"][-1] == "t4"


def decided(adapters: dict | None = None, gpu: str = "l4", replicas: int = 3) -> dict:
    recommendation = {"variant": "w8a8", "checkpoint": "/plans/p/variants/smollm2-135m-w8a8",
                      "gpu": gpu, "tensor_parallel": 2, "replicas": replicas}
    flags = {"dtype": "auto", "max_model_len": 2048, "tensor_parallel_size": 1, "eager": True,
             "lora": bool(adapters), "max_lora_rank": 8 if adapters else None,
             "max_loras": 2 if adapters else None, "max_cpu_loras": 2 if adapters else None}
    speed = {"w8a8": {"measured": True, "flags": flags}}
    return {"recommendation": recommendation,
            "serving": deploy.serving_spec(recommendation, speed, adapters or {})}


def test_the_served_flags_are_the_benched_ones_at_the_plans_parallelism():
    spec = decided({"history": "/a/history"})["serving"]
    args = spec["vllm_args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--max-lora-rank") + 1] == "8" and "--enforce-eager" not in args
    assert spec["flags_from"] == "the bench run of w8a8"


@pytest.mark.parametrize("adapters", [None, {"history": "/a/history", "chemistry": "/a/c"}])
def test_kubernetes_manifests_validate_against_the_kubernetes_schemas(adapters):
    documents = manifests.kubernetes_objects(decided(adapters), None)
    for document in documents:
        kubernetes_validate.validate(document, "1.33", strict=True)
    deployment, service = documents
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert container["args"][:2] == ["--model", "/models/smollm2-135m-w8a8"]
    if adapters:
        assert "history=/models/adapters/history" in container["args"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_a_plan_without_a_recommendation_renders_no_manifests(tmp_path):
    plan = {"serving": None, "nothing_meets": "the budget excludes every option"}
    with pytest.raises(BadInput, match="nothing to deploy"):
        deploy.write_manifests(plan, ("k8s",), tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_deploy_target_is_refused():
    with pytest.raises(BadInput, match="unknown target 'helm'"):
        deploy.parse_targets("k8s,helm")


PLAN_ARGS = ("--requests-per-day", "1000", "--variants", "bf16")


def plan_refused(run_cli, *args) -> str:
    result = run_cli("plan", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def test_plan_refuses_bad_inputs_before_any_stage(isolated_home, run_cli, tmp_path):
    base = make_base(tmp_path / "base")
    out = tmp_path / "plan"
    assert "exactly one of --requests-per-day" in plan_refused(
        run_cli, base, "--out", out, "--variants", "bf16")
    assert "Did you mean 'w8a8'" in plan_refused(
        run_cli, base, "--requests-per-day", "10", "--variants", "w8a9", "--out", out)
    assert "Did you mean 'l40s'" in plan_refused(run_cli, base, *PLAN_ARGS, "--gpus", "l40",
                                                 "--out", out)
    other = make_adapter(tmp_path / "a", spec={**LLAMA, "hidden": 128}, trained_on="other/m")
    assert "does not fit the base model" in plan_refused(
        run_cli, base, *PLAN_ARGS, "--adapter", f"a={other}", "--out", out)
    assert "unknown target" in plan_refused(run_cli, base, *PLAN_ARGS, "--emit", "helm",
                                            "--out", out)
    assert not out.exists()


def test_plan_never_writes_into_a_folder_that_is_not_a_plan(isolated_home, run_cli, tmp_path):
    base = make_base(tmp_path / "base")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "is not a thrifty plan folder" in plan_refused(run_cli, base, *PLAN_ARGS, "--out",
                                                          mine)
    plan_folder = tmp_path / "plan"
    plan_folder.mkdir()
    (plan_folder / STATE_FILE).write_text("{}")
    assert "already holds a plan. Pass --resume" in plan_refused(run_cli, base, *PLAN_ARGS,
                                                                "--out", plan_folder)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_manifests_render_as_yaml_files(tmp_path):
    written = deploy.write_manifests(decided(), ("k8s",), tmp_path)
    documents = list(yaml.safe_load_all(written[0].read_text()))
    assert [d["kind"] for d in documents] == ["Deployment", "Service"]
    with pytest.raises(BadInput, match="pass --force"):
        deploy.write_manifests(decided(), ("k8s",), tmp_path, force=False)


def test_production_stack_values_carry_every_benched_flag():
    plan = decided({"history": "/a/history"})
    (values,) = manifests.production_stack_values(plan, None)
    (model,) = values["servingEngineSpec"]["modelSpec"]
    config = model["vllmConfig"]
    assert (model["replicaCount"], model["requestGPU"], config["tensorParallelSize"]) == (3, 2, 2)
    assert model["enableLoRA"] and config["maxLoras"] == 2
    chart_flags = {"--tensor-parallel-size": config["tensorParallelSize"],
                   "--max-model-len": config["maxModelLen"], "--dtype": config["dtype"],
                   "--max-loras": config["maxLoras"]}
    args = plan["serving"]["vllm_args"]
    for flag, value in chart_flags.items():
        assert args[args.index(flag) + 1] == str(value)
    rest = [a for a in args if a not in chart_flags and a != "--enable-lora"
            and a not in map(str, chart_flags.values())]
    assert config["extraArgs"][:len(rest)] == rest
    assert model["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["NVIDIA-L4"]


def test_the_typed_values_refuse_what_the_chart_schema_refuses():
    config = manifest_models.VllmConfig(tensorParallelSize=1, maxModelLen=2048, dtype="auto",
                                        enablePrefixCaching=True)
    with pytest.raises(TypeError, match="requestCPU = '500m'"):
        manifest_models.ModelSpec(
            name="m", repository="vllm/vllm-openai", tag="v1", modelURL="/models/m",
            replicaCount=1, requestCPU="500m", requestMemory="8Gi", requestGPU=1,
            requestGPUType="nvidia.com/gpu", enableLoRA=False, vllmConfig=config)
    with pytest.raises(TypeError, match="tensorParallelSize"):
        manifest_models.VllmConfig(tensorParallelSize="2", maxModelLen=2048, dtype="auto",
                                   enablePrefixCaching=True)


def test_kserve_service_sets_lora_from_the_benched_flags_and_a_valid_pod():
    plan = decided({"history": "/a/history", "chemistry": "/a/c"})
    (service,) = manifests.kserve_llm_service(plan, "pvc://models/checkpoints/m")
    spec = service["spec"]
    assert service["apiVersion"] == "serving.kserve.io/v1alpha2"
    assert spec["model"]["uri"] == "pvc://models/checkpoints/m"
    assert spec["model"]["lora"] == {
        "adapters": [{"name": "history", "uri": "pvc://models/checkpoints/adapters/history"},
                     {"name": "chemistry", "uri": "pvc://models/checkpoints/adapters/chemistry"}],
        "maxRank": 8, "maxAdapters": 2, "maxCpuAdapters": 2}
    assert spec["parallelism"] == {"tensor": 2} and spec["replicas"] == 3
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": spec["template"]}
    kubernetes_validate.validate(pod, "1.33", strict=True)


def test_deploy_render_refuses_what_is_not_a_plan(isolated_home, run_cli, tmp_path):
    result = run_cli("deploy", "render", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "neither a `thrifty plan` folder nor a plan.json" in " ".join(result.output.split())
    (tmp_path / "plan.json").write_text(json.dumps({"schema": "thrifty.cost"}))
    result = run_cli("deploy", "render", tmp_path)
    assert "is not a thrifty plan (its schema is 'thrifty.cost')" in " ".join(
        result.output.split())


def test_a_gpu_without_a_price_of_the_chosen_kind_is_not_available(isolated_home, run_cli):
    result = run_cli("cost", "plan", "llama-3.1-8b", "--variants", "bf16", "--gpu", "b200,l40s",
                     "--requests-per-day", "200000", "--pricing", "spot", "--json")
    rows = [{**row, "model": row["variant"]} for row in json.loads(result.stdout)["options"]]
    assert any(r["gpu"] == "b200" and r.get("usd_per_month") is None for r in rows)
    best, judged = decide.judge(rows, VARIANT_OF, QUALITY, plan_config.QualityFloor(), 1.0)
    b200 = next(o for o in judged if o["gpu"] == "b200")
    assert b200["excluded_by"] == "unavailable"
    assert b200["why"] == "no spot price for the b200 in the catalog"
    assert best is None and "the budget ($1/month)" in decide.why_nothing(
        judged, plan_config.QualityFloor(), 1.0)


def test_a_floor_of_zero_kld_is_refused_and_an_unmeasured_metric_misses_the_floor():
    with pytest.raises(BadInput, match="kld=0 asks for a variant identical"):
        plan_config.parse_floor("kld=0")
    misses = plan_config.parse_floor("top1=90").shortfalls({"top1_agreement_pct": None})
    assert misses == ["top-1 agreement was not measured (its eval compared no tokens with the "
                      "base)"]


def test_manifests_are_refused_for_a_gpu_without_an_nvidia_node_label(tmp_path):
    with pytest.raises(BadInput, match="the recommended mi300x is not one"):
        deploy.write_manifests(decided(gpu="mi300x"), ("k8s",), tmp_path)
    with pytest.raises(BadInput, match="mount the model from a volume"):
        deploy.write_manifests(decided(), ("k8s",), tmp_path, model_uri="hf://org/m")
    assert not any(tmp_path.iterdir())


def test_force_starts_over_but_keeps_what_the_plan_did_not_write(tmp_path):
    folder = tmp_path / "plan"
    (folder / "variants" / "m-w8a8").mkdir(parents=True)
    (folder / STATE_FILE).write_text("{}")
    (folder / "plan.md").write_text("old")
    (folder / "my-notes.txt").write_text("keep me")
    prepare_folder(folder, resume=False, force=True)
    assert sorted(p.name for p in folder.iterdir()) == ["my-notes.txt", STATE_FILE]
    with pytest.raises(BadInput, match="not both"):
        prepare_folder(folder, resume=True, force=True)


def test_a_stage_whose_run_folder_is_gone_runs_again_and_says_so(tmp_path, isolated_home,
                                                                 capsys):
    stage = [Stage("gpus", ["gpus", "--gpu", "l4"])]
    StageRunner(tmp_path, stage, resume=False, quiet=True).run_all()
    state = json.loads((tmp_path / STATE_FILE).read_text())
    state["gpus"]["result"]["run"] = str(tmp_path / "deleted-run")
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    again = StageRunner(tmp_path, stage, resume=True, quiet=True)
    again.run_all()
    assert again.timings["gpus"]["cached"] is False
    assert f"what it made is gone ({tmp_path / 'deleted-run'})" in " ".join(
        capsys.readouterr().err.split())


def test_the_headline_of_a_base_only_plan_claims_no_measured_quality():
    rec = {"variant": "bf16", "gpu_name": "NVIDIA L4 24GB", "replicas": 1,
           "tensor_parallel": 1, "usd_per_month": 583.0, "usd_per_1m_tokens": 0.1,
           "usd_per_1m_output_tokens": 0.5, "ttft_ms": 16.0, "tpot_ms": 2.4,
           "figures": "modelled (fitted)", "energy": None,
           "price": {"provider": "Modal", "date": "2026-05-07"},
           "quality": decide.variant_quality("bf16", {})}
    text = report.headline({"recommendation": rec, "inputs": {"pricing": "on-demand"}})
    assert "quality vs base: the base itself" in text and "– kWh/1M output tokens" in text
    assert "(measured" not in text
