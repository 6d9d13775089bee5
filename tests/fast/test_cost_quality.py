"""`thrifty cost --quality EVAL_RUN`: each costed checkpoint's measured quality beside its
dollars, and only where the costed variant is the checkpoint that was evaluated."""

import json

from test_cost import LLAMA_8B, W4A16_CONFIG, cost_json, write_checkpoint

COST = ("--requests-per-day", "100000", "--gpu", "h100-sxm")


def write_eval_run(folder, rows):
    """A `thrifty eval` run folder, as its result.json records the rows."""
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(
        {"schema": "thrifty.run", "command": "eval", "details": {"rows": rows}}))
    return folder


def eval_row(label, path, vs=None, adapter=None):
    return {"label": label, "path": str(path), "perplexity": 10.0, "adapter": adapter,
            "vs_base": vs}


VS = {"kld_mean": 0.05, "top1_agreement_pct": 91.5, "delta_log_ppl": 0.04}


def test_checkpoints_get_their_quality_and_modelled_variants_none(isolated_home, run_cli,
                                                                    tmp_path):
    base = write_checkpoint(tmp_path / "llama", LLAMA_8B)
    quantized = write_checkpoint(tmp_path / "llama-w4a16", LLAMA_8B, W4A16_CONFIG)
    run = write_eval_run(tmp_path / "eval-run", [
        eval_row("llama", base), eval_row("llama-w4a16", quantized, VS),
        eval_row("llama+chat", base, VS, adapter="/adapters/chat")])
    report = cost_json(run_cli, str(base), str(quantized), "--variants", "bf16,w8a8", *COST,
                       "--quality", str(run))
    quality = {(r["model"], r["variant"]): r["quality"] for r in report["options"]}
    assert quality[(str(quantized), "w4a16")]["top1_agreement_pct"] == 91.5
    assert quality[(str(base), "bf16")]["reference"] is True
    assert quality[(str(base), "w8a8")] is None  # modelled from the base, never evaluated
    assert report["quality"]["reference"] == "llama"


def test_quality_lines_name_every_checkpoint_and_what_was_not_evaluated(isolated_home, run_cli,
                                                                        tmp_path):
    quantized = write_checkpoint(tmp_path / "llama-w4a16", LLAMA_8B, W4A16_CONFIG)
    other = write_checkpoint(tmp_path / "other-w4a16", LLAMA_8B, W4A16_CONFIG)
    run = write_eval_run(tmp_path / "eval-run", [eval_row("base", "/m/base"),
                                                 eval_row("llama-w4a16", quantized, VS)])
    result = run_cli("cost", str(quantized), str(other), *COST, "--quality", str(run))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "measured by `thrifty eval` against base" in text
    assert "top-1 agreement 91.5%" in text
    assert f"not in that run (or only modelled variants): {other}" in text


def test_quality_from_a_run_that_is_not_an_eval_is_refused(isolated_home, run_cli, tmp_path):
    folder = tmp_path / "bench-run"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({"command": "bench", "details": {}}))
    result = run_cli("cost", "llama-3.1-8b", *COST, "--quality", str(folder))
    assert result.exit_code == 1 and "not a `thrifty eval` run" in result.output
    missing = run_cli("cost", "llama-3.1-8b", *COST, "--quality", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "no eval result there" in missing.output
