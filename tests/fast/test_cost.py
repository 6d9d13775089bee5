"""The throughput model, the scheduler simulation, calibration, and the cost commands."""

import json
import math

import pytest

from thrifty.core.errors import BadInput
from thrifty.cost import calibrate, catalog, finetune_cost, model_shape, serving
from thrifty.cost.perf_model import (
    Efficiency,
    Hardware,
    decode_step,
    prefill_step,
    steady_state,
    step_seconds,
)
from thrifty.cost.simulate import Workload, simulate, summarize

EFF = Efficiency(memory=0.8, compute=0.5, overhead_ms=2.0)


def test_decode_is_memory_bound_and_prefill_compute_bound(cat):
    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("h100-sxm"))
    decode = step_seconds(shape, hw, EFF, decode_step(1, 1000))
    by_hand = 0.002 + (shape.decode_read_bytes + 1000 * shape.kv_bytes_per_token) / (
        3350e9 * 0.8)
    assert decode == pytest.approx(by_hand)
    prefill = step_seconds(shape, hw, EFF, prefill_step(4096))
    flops = 2 * shape.linear_params * 4096 + 2 * shape.embedding_params \
        + shape.attention_flops(1, 1) * 4096 * 4096 / 2
    assert prefill == pytest.approx(0.002 + flops / (989e12 * 0.5))
    w4 = model_shape.variant(shape, "w4a16")
    assert step_seconds(w4, hw, EFF, decode_step(1, 1000)) - 0.002 < (decode - 0.002) / 2.5


def test_steady_state_trades_latency_for_throughput(cat):
    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("l40s"))
    states = [steady_state(shape, hw, EFF, b, 512, 256) for b in (1, 8, 64)]
    assert [s.tpot_s for s in states] == sorted(s.tpot_s for s in states)
    rates = [s.output_tokens_per_s for s in states]
    assert rates == sorted(rates) and rates[2] > 10 * rates[0]


def test_simulation_of_one_user_by_hand(cat):
    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("a100-80gb"))
    done = simulate(shape, hw, EFF, Workload([(100, 5)] * 3, concurrency=1))
    assert len(done) == 3
    prefill = step_seconds(shape, hw, EFF, prefill_step(100))
    first = done[0]
    decodes = [step_seconds(shape, hw, EFF, decode_step(1, 100 + k)) for k in range(1, 5)]
    # the client gets a step's token when the next step ends (vLLM streams while it runs);
    # the last one at once, since the engine then has nothing else to run
    assert first.ttft_s == pytest.approx(prefill + decodes[0])
    assert first.e2e_s == pytest.approx(prefill + sum(decodes), rel=1e-5)  # steps taken at once
    assert done[1].arrival_s == pytest.approx(first.finished_s)  # closed loop


def test_simulation_respects_the_kv_cache_and_arrivals(cat):
    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("a100-80gb"))
    roomy = summarize(simulate(shape, hw, EFF, Workload([(200, 50)] * 8, concurrency=8)))
    tight = summarize(simulate(shape, hw, EFF,
                               Workload([(200, 50)] * 8, concurrency=8, kv_tokens=500)))
    assert tight["output_throughput_tokens_per_s"] < roomy["output_throughput_tokens_per_s"] / 2
    late = simulate(shape, hw, EFF, Workload([(10, 2)] * 2, arrivals_s=[0.0, 5.0]))
    assert late[1].arrival_s == 5.0 and late[1].first_token_s > 5.0


def synthetic_bench(shape, hw, eff) -> dict:
    """A bench result whose 'measurements' come from the model itself with known
    efficiencies: calibration must find them again."""
    points, requests = [], []
    for index, load in enumerate((1, 4)):
        lengths = [(128, 64)] * 8
        done = simulate(shape, hw, eff, Workload(lengths, concurrency=load))
        points.append({"index": index, "kind": "concurrency", "load": load,
                       "summary": summarize(done)})
        requests += [{"point": index, "ok": True, "started_s": r.arrival_s,
                      "input_tokens": r.input_tokens, "output_tokens": r.output_tokens}
                     for r in done]
    return {"points": points, "requests": requests, "memory": {"kv_cache_tokens": 100000}}


def test_calibration_recovers_known_efficiencies(cat):
    shape = model_shape.load("smollm2-1.7b")
    hw = Hardware("test-cpu", 20.0, 0.5, 0.5, max_batched_tokens=2048, max_num_seqs=128)
    truth = Efficiency(0.6, 0.3, 40.0, lag_ms=30.0)
    fitted, report = calibrate.fit(synthetic_bench(shape, hw, truth), shape, hw, "synthetic")
    assert report["worst_error_pct"] < 2
    assert fitted.memory == pytest.approx(0.6, rel=0.15)  # trades off with the overhead
    assert fitted.compute == pytest.approx(0.3, rel=0.1)
    # the step overhead and the request lag can trade off against each other on so few
    # points; the predictions they give are what must agree
    assert 0 < fitted.overhead_ms < 80 and fitted.lag_ms < 100


@pytest.mark.parametrize("probe_scale", [0.02, 20.0])
def test_calibration_does_not_depend_on_the_probes_scale(cat, probe_scale):
    """A probe can be far from what vLLM reaches (a CPU's bf16 matmul rate in torch): the
    efficiencies absorb the scale and the predictions still match."""
    shape = model_shape.load("smollm2-1.7b")
    hw = Hardware("test-cpu", 20.0, 0.5, 0.5, max_batched_tokens=2048, max_num_seqs=128)
    bench = synthetic_bench(shape, hw, Efficiency(0.5, 0.4, 15.0, lag_ms=20.0))
    probed = Hardware("test-cpu", 20.0, 0.5 * probe_scale, 0.5, max_batched_tokens=2048,
                      max_num_seqs=128)
    fitted, report = calibrate.fit(bench, shape, probed, "synthetic")
    assert report["worst_error_pct"] < 3, report["points"]
    assert fitted.compute * probe_scale == pytest.approx(0.4, rel=0.15)


def test_nelder_mead_finds_a_minimum():
    best = calibrate.nelder_mead(lambda x: (x[0] - 1) ** 2 + (x[1] + 2) ** 2, [0.0, 0.0], 0.5,
                                 200)
    assert best == pytest.approx([1, -2], abs=1e-3)


def test_read_bench_rejects_other_files(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"details": {}}))
    with pytest.raises(BadInput, match="not the result of `thrifty bench`"):
        calibrate.read_bench(tmp_path)
    with pytest.raises(BadInput, match="neither a `thrifty bench` run folder"):
        calibrate.read_bench(tmp_path / "nope")


# --- traffic, replicas, dollars

@pytest.mark.parametrize("requests", [0, -5])
def test_zero_or_negative_traffic_is_refused(requests):
    with pytest.raises(BadInput, match="requests per day"):
        serving.Traffic(requests, 512, 256)


def test_tokens_per_month_become_requests_per_day():
    traffic = serving.Traffic.from_tokens_per_month(730e6, 700, 300, 1.0)
    assert traffic.requests_per_day == pytest.approx(730e6 / 1000 / (730 / 24))
    assert sum(traffic.tokens_per_month) == pytest.approx(730e6)


def test_replicas_and_dollars_by_hand(cat):
    shape = model_shape.load("llama-3.1-8b")
    traffic = serving.Traffic(2_000_000, 512, 256, peak_factor=3)
    slo = serving.Slo(2000, 100)
    option = serving.plan_option(cat.find("l40s"), shape, "bf16", EFF, cat, traffic, slo, 768)
    assert not option.problem
    per_replica = option.capacity.request_rate_per_s
    assert option.replicas == math.ceil(traffic.peak_rps / per_replica)
    assert slo.met(option.capacity) and option.state.request_rate_per_s <= per_replica * 1.01
    price = cat.cheapest("l40s", "on-demand").usd_per_gpu_hour
    assert option.usd_per_month("on-demand") == pytest.approx(option.gpus * price * 730)
    row = serving.option_row(option, traffic, "on-demand")
    month_tokens = sum(traffic.tokens_per_month)
    assert row["usd_per_1m_tokens"] == pytest.approx(row["usd_per_month"] / month_tokens * 1e6,
                                                     rel=1e-3)
    assert row["utilisation_pct"] == pytest.approx(
        100 * traffic.average_rps / (option.replicas * per_replica), abs=0.1)


def test_an_unreachable_slo_and_a_model_that_does_not_fit_are_reported(cat):
    traffic = serving.Traffic(1000, 512, 256)
    tight = serving.plan_option(cat.find("t4"), model_shape.load("llama-3.1-8b"), "w4a16", EFF, cat,
                             traffic, serving.Slo(1, 1), 768)
    assert "misses the SLO" in tight.problem
    big = serving.plan_option(cat.find("l4"), model_shape.load("llama-3.1-405b"), "bf16", EFF, cat,
                           traffic, serving.Slo(2000, 100), 768)
    assert "does not fit" in big.problem and "GiB" in big.problem


def test_buy_vs_rent_reproduces_the_published_break_even(cat):
    h100 = cat.find("h100-sxm")
    aws = [p for p in cat.prices_for("h100-sxm", ("on-demand",)) if p.provider == "AWS"][0]
    result = serving.buy_vs_rent(h100, 1, aws, 40, serving.Ownership(years=3))
    # owning pays off above ~40 h/week over 2-3 years at hyperscaler prices
    assert 30 < result["break_even_hours_per_week"] < 50
    cheap = cat.cheapest("h100-sxm", "on-demand")
    assert serving.buy_vs_rent(h100, 1, cheap, 40, serving.Ownership())["cheaper"] == "rent"
    capital = 30000 * 1.5
    margin = aws.usd_per_gpu_hour - 0.7 * 1.4 * 0.12
    assert result["break_even_hours_per_week"] == pytest.approx(capital / (156 * margin),
                                                                abs=0.1)


# --- fine-tuning

def test_finetune_memory_reproduces_the_published_70b_table(cat):
    shape = model_shape.load("llama-3.1-70b")
    h100 = cat.find("h100-sxm")
    full = finetune_cost.plan(shape, finetune_cost.Job("full", 1e8), h100, None)
    assert full["model_states_gb"] == pytest.approx(1120, rel=0.02)  # 16 B per parameter
    assert full["gpus"] >= 8
    lora = finetune_cost.plan(shape, finetune_cost.Job("lora", 1e8), h100, None)
    assert 140 <= lora["total_gb"] <= 200
    qlora = finetune_cost.plan(shape, finetune_cost.Job("qlora", 1e8),
                               cat.find("rtx-6000-ada"), None)
    assert qlora["total_gb"] == pytest.approx(46, abs=3) and qlora["gpus"] == 1


def test_finetune_dollars_by_hand(cat):
    shape = model_shape.load("llama-3.1-8b")
    price = cat.cheapest("h100-sxm", "on-demand")
    plan = finetune_cost.plan(shape, finetune_cost.Job("lora", 1e8, epochs=2, mfu=0.5),
                              cat.find("h100-sxm"), price)
    flops = (4 * shape.params + 6 * finetune_cost.lora_params(shape, 16) + 2 * shape.params) \
        * 2e8
    hours = flops / (plan["gpus"] * 989e12 * 0.5) / 3600
    assert plan["usd"] == pytest.approx(hours * plan["gpus"] * price.usd_per_gpu_hour, rel=0.01)


# --- the commands

def test_cost_command_ranks_cheapest_first_and_writes_reports(isolated_home, run_cli, tmp_path):
    md, page = tmp_path / "cost.md", tmp_path / "cost.html"
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "500000", "--json",
                     "--markdown", md, "--html", page)
    assert result.exit_code == 0, result.output
    report, _ = json.JSONDecoder().raw_decode(result.output)  # stderr warnings follow
    monthly = [r["usd_per_month"] for r in report["options"] if r.get("usd_per_month")]
    assert monthly == sorted(monthly) and len(monthly) > 10
    best = report["options"][0]
    assert best["figures"].startswith("modelled") and best["price"]["date"]
    assert {"usd_per_1m_input_tokens", "usd_per_1m_output_tokens", "replicas"} <= set(best)
    assert set(best["usd_per_month_by_pricing"]) == {"on-demand", "spot", "reserved"}
    assert report["buy_vs_rent"]
    assert "| rank | GPU |" in md.read_text()
    html = page.read_text()
    assert "<figcaption>Monthly cost against latency, per option</figcaption>" in html
    assert html.count("window.Plotly = Plotly;") == 1  # plotly.js inlined, once
    again = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "500000", "--html", page)
    assert again.exit_code == 1 and "--force" in again.output
    assert page.read_text() == html  # nothing overwritten


@pytest.mark.parametrize("args, phrase", [
    (["--requests-per-day", "0"], "0 requests per day"),
    (["--requests-per-day", "-3"], "-3 requests per day"),
    (["--tokens-per-month", "0"], "traffic must be positive"),
    ([], "exactly one of --requests-per-day or --tokens-per-month"),
    (["--requests-per-day", "10", "--gpu", "h1000"], "Did you mean"),
    (["--requests-per-day", "10", "--slo", "e2e_ms=100"], "drop e2e_ms"),
    (["--requests-per-day", "10", "--efficiency", "memory=2"], "--efficiency"),
    (["--requests-per-day", "10", "--output-tokens", "0"], "0 output tokens"),
    (["--requests-per-day", "10", "--peak-factor", "0.5"], "peak factor is 0.5"),
    (["--requests-per-day", "10", "--hours-per-week", "200"], "between 0 and 168"),
])
def test_cost_command_bad_input(isolated_home, run_cli, args, phrase):
    result = run_cli("cost", "llama-3.1-8b", *args)
    assert result.exit_code == 1, result.output
    assert phrase in result.output and "Traceback" not in result.output


def test_cost_command_model_that_fits_nowhere(isolated_home, run_cli):
    result = run_cli("cost", "llama-3.1-405b", "--requests-per-day", "10", "--gpu", "l4,t4",
                     "--variants", "bf16")
    assert result.exit_code == 1
    assert "No option fits" in result.output and "GiB" in result.output


def test_cost_command_warns_about_old_prices(isolated_home, run_cli, tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('[[price]]\ngpu = "l4"\nprovider = "Old cloud"\nkind = "on-demand"\n'
                   'usd_per_gpu_hour = 0.01\ndate = 2024-03-01\nsource = "https://old"\n')
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "1000", "--gpu", "l4",
                     "--catalog", old)
    assert result.exit_code == 0, result.output
    assert "more than a year old" in result.output and "2024-03-01" in result.output


def test_cost_finetune_command(isolated_home, run_cli):
    result = run_cli("cost", "finetune", "llama-3.1-70b", "--tokens", "1e8", "--json")
    assert result.exit_code == 0, result.output
    plans = json.loads(result.output)["plans"]
    assert {p["method"] for p in plans} == {"full", "lora", "qlora"}
    bad = run_cli("cost", "finetune", "llama-3.1-8b", "--tokens", "1e6", "--method", "distill")
    assert bad.exit_code == 1 and "--teacher" in bad.output
    distill = run_cli("cost", "finetune", "llama-3.1-8b", "--tokens", "1e6", "--method",
                      "distill", "--teacher", "llama-3.1-70b", "--json")
    assert distill.exit_code == 0
    training, capture = json.loads(distill.output)["plans"][:2]
    # offline (the default): the teacher is not in the training job but in one capture pass
    assert "teacher_weights" not in training["memory_gb"]
    assert training["model_states_gb"] == pytest.approx(16 * 8.03, rel=0.01)
    assert capture["method"] == "distill: teacher capture"
    assert capture["memory_gb"]["teacher_weights"] == pytest.approx(141, rel=0.01)
    # 141 GB of bf16 weights: over 2 x 80 GB they leave vLLM no room for activations
    assert capture["gpus"] == 4
    # 2 x 70.6e9 FLOPs per token over 4 x 989 TFLOP/s x 0.4 MFU, for 1e6 tokens
    assert capture["hours"] == pytest.approx(2 * 70.55e9 * 1e6 / (4 * 989e12 * 0.4) / 3600,
                                             abs=0.005)
    assert capture["signal_bytes_per_token"] == 20 * (4 + 2)  # 128k vocab: int32 ids
    online = run_cli("cost", "finetune", "llama-3.1-8b", "--tokens", "1e6", "--method",
                     "distill", "--teacher", "llama-3.1-70b", "--teacher-signal", "online",
                     "--json")
    plans = json.loads(online.output)["plans"]
    assert all(p["method"] == "distill" for p in plans)
    assert plans[0]["memory_gb"]["teacher_weights"] == pytest.approx(141, rel=0.01)


def test_cpu_calibration_is_refused_for_gpu_costing(isolated_home, run_cli, tmp_path):
    file = tmp_path / "cal.json"
    file.write_text(json.dumps({"kind": "thrifty.calibration", "hardware": {
        "name": "AMD EPYC (2 cores)", "device": "cpu"}, "efficiency": {
        "memory": 1, "compute": 1, "overhead_ms": 1, "source": "x"}}))
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "10", "--calibration", file)
    assert result.exit_code == 1 and "calibrated on a CPU" in result.output


def test_a_bench_run_supplies_a_measured_figure(isolated_home, run_cli, tmp_path):
    run = tmp_path / "bench-run"
    run.mkdir()
    summary = {"ttft_ms_p50": 120.0, "tpot_ms_p50": 30.0, "e2e_ms_p50": 2000.0,
               "request_throughput_per_s": 3.0, "output_throughput_tokens_per_s": 768.0}
    bench = {"bench_schema_version": 1, "hardware": "NVIDIA L4",
             "workload": {"input_tokens": "512", "output_tokens": "256"},
             "points": [{"index": 0, "kind": "concurrency", "load": 8, "slo_met": True,
                         "summary": summary},
                        {"index": 1, "kind": "concurrency", "load": 32, "slo_met": False,
                         "summary": {**summary, "request_throughput_per_s": 9.0}}],
             "requests": [{"point": 0, "ok": True}]}
    (run / "result.json").write_text(json.dumps({"details": {"bench": bench}}))
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", "--gpu", "l4",
                     "--variants", "w4a16", "--bench", run, "--bench-gpu", "l4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    option = report["options"][0]
    assert option["figures"].startswith("measured (bench run bench-run, concurrency 8")
    # the run does not say what it served: the one variant costed is taken, with a warning
    assert "does not say which model it served" in " ".join(result.output.split())
    # 100,000 requests/day x 2 peak = 2.31 req/s at peak; 3 req/s measured per replica
    assert option["replicas"] == 1 and option["capacity_requests_per_s_per_replica"] == 3.0
    missing = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "10", "--bench", run)
    assert missing.exit_code == 1 and "--bench-gpu" in missing.output


def test_cost_chart_has_a_legend_per_variant_and_hover_per_option(isolated_home, run_cli,
                                                                   tmp_path):
    from test_html_report import plots

    from thrifty.core.numbers import by_size as fmt

    page = tmp_path / "cost.html"
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", "--html", page,
                     "--json")
    assert result.exit_code == 0, result.output
    report, _ = json.JSONDecoder().raw_decode(result.output)
    serving_rows = [r for r in report["options"] if r.get("usd_per_month") is not None]
    [(title, traces, layout)] = plots(page.read_text())
    assert title == "Cost vs TPOT" and "annotations" not in layout  # no label on the points
    assert [t["name"] for t in traces] == sorted({f"{r['model']} {r['variant']}"
                                                   for r in serving_rows})
    assert all(t["mode"] == "markers" and "text" not in t for t in traces)
    assert sum(len(t["x"]) for t in traces) == len(serving_rows) > 10
    cheapest = serving_rows[0]
    variant = next(t for t in traces if t["name"] == f"{cheapest['model']} {cheapest['variant']}")
    hover = variant["hovertext"][variant["y"].index(cheapest["usd_per_month"])]
    assert cheapest["gpu"] in hover and cheapest["variant"] in hover and "/month" in hover
    assert f"TPOT {fmt(cheapest['tpot_ms'])} ms" in hover and "TTFT" in hover


def test_planning_steady_state_agrees_with_a_poisson_replay(cat):
    """The closed-form steady state that plans capacity, against the scheduler replay of
    Poisson arrivals at 90% of the rate it promises."""
    import random

    shape = model_shape.load("llama-3.1-8b")
    hw = Hardware.from_gpu(cat.find("l40s"))
    state = steady_state(shape, hw, EFF, 32, 512, 256)
    rng, now, arrivals = random.Random(0), 0.0, []
    for _ in range(400):
        now += rng.expovariate(state.request_rate_per_s * 0.9)
        arrivals.append(now)
    replay = summarize(simulate(shape, hw, EFF, Workload([(512, 256)] * 400,
                                                         arrivals_s=arrivals))[50:])
    assert replay["tpot_ms_p50"] == pytest.approx(state.tpot_s * 1000, rel=0.15)
    assert replay["output_throughput_tokens_per_s"] == pytest.approx(
        0.9 * state.output_tokens_per_s, rel=0.15)


# --- a bench run stands in for the variant it served

def write_bench_run(folder, target=None):
    """A bench run on an L4 whose best SLO-compliant load point served 3 requests/s."""
    folder.mkdir()
    summary = {"ttft_ms_p50": 120.0, "tpot_ms_p50": 30.0, "e2e_ms_p50": 2000.0,
               "request_throughput_per_s": 3.0, "output_throughput_tokens_per_s": 768.0}
    bench = {"bench_schema_version": 1, "hardware": "NVIDIA L4", "target": target,
             "workload": {"input_tokens": "512", "output_tokens": "256"},
             "points": [{"index": 0, "kind": "concurrency", "load": 8, "slo_met": True,
                         "summary": summary}],
             "requests": [{"point": 0, "ok": True}]}
    (folder / "result.json").write_text(json.dumps({"details": {"bench": bench}}))
    return folder


def write_checkpoint(folder, config, quantization=None):
    """A model folder with only its config.json, the way a quantized checkpoint records it."""
    folder.mkdir()
    extra = {"quantization_config": quantization} if quantization else {}
    (folder / "config.json").write_text(json.dumps({**config, **extra}))
    return folder


W4A16_CONFIG = {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
    "weights": {"num_bits": 4, "group_size": 128, "strategy": "group"},
    "input_activations": None}}}
LLAMA_8B = model_shape.known_shapes()["llama-3.1-8b"]["config"]
SMOLLM2_135M = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                "tie_word_embeddings": True, "max_position_embeddings": 8192}


def cost_json(run_cli, *args):
    result = run_cli("cost", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_bench_run_stands_in_for_the_variant_it_served(isolated_home, run_cli, tmp_path):
    quantized = write_checkpoint(tmp_path / "llama-w4a16", LLAMA_8B, W4A16_CONFIG)
    run = write_bench_run(tmp_path / "bench-run", {"model_path": str(quantized)})
    report = cost_json(run_cli, "llama-3.1-8b", "--requests-per-day", "100000", "--gpu", "l4",
                       "--variants", "bf16,w4a16", "--bench", run, "--bench-gpu", "l4")
    figures = {r["variant"]: r["figures"] for r in report["options"]}
    assert figures["w4a16"].startswith("measured (bench run bench-run")
    assert figures["bf16"].startswith("modelled")


def test_a_bench_run_on_two_gpus_costs_two_gpus_per_replica(isolated_home, run_cli, tmp_path):
    folder = write_checkpoint(tmp_path / "llama", LLAMA_8B)
    run = write_bench_run(tmp_path / "bench-run", {"model_path": None, "flags": {
        "base_path": str(folder), "tensor_parallel_size": 2}})
    report = cost_json(run_cli, "llama-3.1-8b", "--requests-per-day", "100000", "--gpu", "l4",
                       "--variants", "bf16", "--bench", run, "--bench-gpu", "l4")
    [option] = report["options"]
    assert option["figures"].startswith("measured")
    assert option["tensor_parallel"] == 2 and option["gpus"] == 2 * option["replicas"]
    assert option["tensor_parallel_chosen_by"] == "the bench run"


@pytest.mark.parametrize("served, args, phrases", [
    ("w4a16", ["--variants", "bf16"],
     ["as w4a16", "add w4a16 to --variants", "as a MODEL"]),
    ("smollm", ["--variants", "bf16,w4a16"], ["is not the model costed here", "thrifty cost"]),
    (None, ["--variants", "bf16,w4a16"],
     ["does not say which model it served", "--variants with one name"]),
    ("w4a16", ["--variants", "w4a16", "--gpu", "t4"], ["not among the GPUs costed"]),
    ("tp2", ["--variants", "bf16", "--tensor-parallel", "1"],
     ["tensor parallelism 2", "--tensor-parallel 2"]),
])
def test_a_bench_run_of_something_not_costed_is_refused(isolated_home, run_cli, tmp_path,
                                                        served, args, phrases):
    folders = {"w4a16": lambda: {"model_path": str(write_checkpoint(
                   tmp_path / "llama-w4a16", LLAMA_8B, W4A16_CONFIG))},
               "smollm": lambda: {"model_path": str(write_checkpoint(
                   tmp_path / "smollm", SMOLLM2_135M))},
               "tp2": lambda: {"flags": {"base_path": str(write_checkpoint(
                   tmp_path / "llama", LLAMA_8B)), "tensor_parallel_size": 2}}}
    target = folders[served]() if served else None
    run = write_bench_run(tmp_path / "bench-run", target)
    gpu = [] if "--gpu" in args else ["--gpu", "l4"]
    result = run_cli("cost", "llama-3.1-8b", "--requests-per-day", "100000", *gpu, *args,
                     "--bench", run, "--bench-gpu", "l4")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert all(p in text for p in phrases), text
    assert "Traceback" not in result.output


# --- only variants thrifty can make are ranked

def test_variants_thrifty_quantize_cannot_make_are_not_ranked(isolated_home, run_cli, tmp_path,
                                                             monkeypatch):
    from thrifty.formats import quantize_manifest

    monkeypatch.delitem(quantize_manifest.SCHEMES, "W8A8")  # as before thrifty made W8A8
    md = tmp_path / "cost.md"
    report = cost_json(run_cli, "llama-3.1-8b", "--requests-per-day", "100000", "--variants",
                       "bf16,w8a8,w8a16,w4a16", "--markdown", md)
    ranked = {r["variant"] for r in report["options"] if r.get("usd_per_month") is not None}
    assert ranked == {"bf16", "w8a16", "w4a16"}
    w8a8 = [r for r in report["options"] if r["variant"] == "w8a8"]
    assert w8a8 and all("`thrifty quantize` cannot make w8a8" in r["problem"]
                        and "llm-compressor" in r["problem"] for r in w8a8)
    assert "- llama-3.1-8b w8a8 on every GPU: `thrifty quantize` cannot make w8a8" \
        in md.read_text()


def test_every_quantized_variant_cost_ranks_is_a_scheme_thrifty_quantize_makes(
        isolated_home, run_cli):
    from thrifty.cost.model_shape import VARIANTS
    from thrifty.formats import quantize_manifest

    help_text = run_cli("quantize", "--help").output
    assert all(name in help_text for name in quantize_manifest.SCHEMES)
    quantized = {name for name, (bits, _, _) in VARIANTS.items() if bits < 16}
    assert quantized <= quantize_manifest.precisions()
    report = cost_json(run_cli, "llama-3.1-8b", "--requests-per-day", "100000", "--variants",
                       ",".join(sorted(quantized)), "--gpu", "h100-sxm")
    assert all(r["usd_per_month"] and not r["problem"] for r in report["options"])


# --- --tensor-parallel fixes the GPUs per replica

def test_tensor_parallel_sets_the_gpus_per_replica(isolated_home, run_cli, tmp_path):
    fit_two = json.loads(run_cli("fit", "llama-3.1-8b", "--gpu", "h100-sxm",
                                 "--tensor-parallel", "2", "--json").output)
    fit_auto = json.loads(run_cli("fit", "llama-3.1-8b", "--gpu", "h100-sxm", "--json").output)
    [two], [auto] = fit_two["results"][0]["fits"], fit_auto["results"][0]["fits"]
    assert (auto["tensor_parallel"], two["tensor_parallel"]) == (1, 2)
    assert two["tensor_parallel_chosen_by"] == "--tensor-parallel"
    assert two["weights_gib_per_gpu"] == pytest.approx(auto["weights_gib_per_gpu"] / 2, abs=0.01)
    md = tmp_path / "cost.md"
    common = ("llama-3.1-8b", "--requests-per-day", "2000000", "--gpu", "h100-sxm,l4",
              "--variants", "bf16")
    report = cost_json(run_cli, *common, "--tensor-parallel", "2", "--markdown", md)
    single = cost_json(run_cli, *common)
    assert report["tensor_parallel"]["given"] == 2
    for row in report["options"]:
        assert row["tensor_parallel"] == 2 and row["gpus"] == 2 * row["replicas"]
    by_gpu = {r["gpu"]: r for r in single["options"]}
    assert all(r["capacity_requests_per_s_per_replica"]
               != by_gpu[r["gpu"]]["capacity_requests_per_s_per_replica"]
               for r in report["options"])  # the throughput model ran at TP 2
    text = md.read_text()
    assert "GPUs per replica (TP): 2, as given (--tensor-parallel)" in text
    assert "| 1 | " in text and " | 2 | " in text


def test_a_tensor_parallel_size_beyond_a_gpus_node_leaves_that_gpu_out(isolated_home):
    from dataclasses import replace

    from thrifty.cost.fit import fit

    small_node = replace(catalog.load().find("l4"), max_per_node=4)
    refused = fit(model_shape.load("llama-3.1-8b"), small_node, 4096, tp=8)
    assert not refused.fits and "a l4 node holds 4" in refused.reason


@pytest.mark.parametrize("command", ["fit", "cost"])
@pytest.mark.parametrize("model, tp, phrase", [
    ("llama-3.1-8b", "3", "--tensor-parallel 3 is not a power of two"),
    ("llama-3.1-8b", "0", "--tensor-parallel 0 is not a power of two"),
    ("llama-3.1-8b", "16", "more GPUs than a node of any GPU costed here holds"),
    ("llama-3.1-70b", "1", "at --tensor-parallel 1"),
    ("smollm", "2", "has 9 attention heads"),
])
def test_tensor_parallel_bad_input(isolated_home, run_cli, tmp_path, command, model, tp,
                                   phrase):
    if model == "smollm":
        model = write_checkpoint(tmp_path / "smollm", SMOLLM2_135M)
    traffic = ["--requests-per-day", "1000", "--variants", "bf16"] if command == "cost" \
        else ["--context", "8192"]
    result = run_cli(command, model, "--gpu", "h100-sxm", *traffic, "--tensor-parallel", tp)
    assert result.exit_code == 1, result.output
    assert phrase in " ".join(result.output.split()) and "Traceback" not in result.output


def test_an_efficiency_no_measured_step_depends_on_stays_finite(cat):
    """Every step compute-bound (a CPU without bf16 hardware): the memory side of the roofline
    changes no prediction, and the fit must not let it drift to absurd values."""
    shape = model_shape.load("smollm2-1.7b")
    hw = Hardware("slow-matmul-cpu", 20.0, 0.002, 0.002, max_batched_tokens=2048,
                  max_num_seqs=128)
    bench = synthetic_bench(shape, hw, Efficiency(0.5, 0.5, 5.0, lag_ms=20.0))
    fitted, report = calibrate.fit(bench, shape, hw, "synthetic")
    assert report["worst_error_pct"] < 3, report["points"]
    assert fitted.compute == pytest.approx(0.5, rel=0.1)
    assert 0.05 < fitted.memory < 20


def test_w8a8_is_not_an_option_where_vllm_has_no_int8_kernel(isolated_home, run_cli):
    # vLLM's INT8 W8A8 kernels stop before Blackwell: the B200's datasheet INT8 rate must not
    # rank a variant vLLM cannot run there; FP8 is the 8-bit choice on it
    report = cost_json(run_cli, "llama-3.1-8b", "--requests-per-day", "100000", "--variants",
                       "w8a8,fp8", "--gpu", "b200,h100-sxm")
    problems = {(r["gpu"], r["variant"]): r.get("problem") or "" for r in report["options"]}
    assert "no INT8 W8A8 kernel" in problems[("b200", "w8a8")]
    assert problems[("b200", "fp8")] == problems[("h100-sxm", "w8a8")] == ""
