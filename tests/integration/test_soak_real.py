"""A minute of the adapter churn soak (benchmarks/soak.py; the committed result is ten): real
vLLM serving the W4A16 default model with the four demo adapters while one is unloaded and
loaded back every 10 s."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import needs_w4a16_kernel

ROOT = Path(__file__).resolve().parents[2]


@needs_w4a16_kernel
def test_a_minute_of_adapter_churn_fails_and_misroutes_nothing(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/soak.py", "--minutes", "1", "--results",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    summary = result["summary"]
    assert summary["failed_count"] == 0, summary["outcomes"]
    assert summary["misrouted_count"] == 0, summary["outcomes"]
    assert summary["outcomes"].get("correct", 0) >= 20
    assert summary["prompts_telling_every_model_apart"] >= 1  # misrouting would show
    assert summary["hot_loads_count"] >= 4 and summary["hot_load_ms_p50"] > 0
    assert summary["churn_errors_count"] == 0
    assert len(result["memory"]) >= 20  # RSS sampled every 2 s
    # each of the server's processes on its own, adding up to the tree's RSS
    last = result["memory"][-1]
    assert {"APIServer", "EngineCore", "Worker"} <= set(last["by_process"])
    assert sum(last["by_process"].values()) == pytest.approx(last["rss_mib"], abs=1)
    assert set(summary["rss_second_half_by_process"]) == set(last["by_process"])
    # USS reads wait on the engine's mmap lock (a CI machine once took 54 s for one): one
    # sample shows the thread works; its pace is not the point of a minute's run
    assert result["memory_uss"] and result["memory_uss"][0]["uss_mib"] > 0
    assert "Adapter churn soak" in (tmp_path / "soak.md").read_text()
