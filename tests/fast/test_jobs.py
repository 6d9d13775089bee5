"""The worker protocol: events in order, results back, user errors and crashes surfaced."""

import sys
import textwrap
from pathlib import Path

import pytest

from thrifty.core import jobs
from thrifty.core.errors import BadInput, WorkerFailed

WORKER = textwrap.dedent('''
    import sys
    from thrifty.core.errors import BadInput
    from thrifty.core.jobs import worker_main

    def ok(params, events):
        print("a library writing to stdout must not break the event stream")
        for i in range(3):
            events.progress("count", i + 1, 3, "steps")
        return {"doubled": params["x"] * 2}

    def user_error(params, events):
        raise BadInput("the corpus has no text; give a file with text")

    def crash(params, events):
        print("loading weights...", file=sys.stderr)
        raise RuntimeError("segment of weights is corrupt")

    def abort_at_exit(params, events):
        import atexit, os
        atexit.register(os.abort)  # as vLLM's engine threads sometimes do at teardown
        return {"answer": 42}

    if __name__ == "__main__":
        worker_main({"ok": ok, "user_error": user_error, "crash": crash,
                     "abort_at_exit": abort_at_exit})
''')


@pytest.fixture
def worker(tmp_path, isolated_home):
    (tmp_path / "toy_worker.py").write_text(WORKER)
    return {"PYTHONPATH": str(tmp_path)}


def test_result_and_events(worker, tmp_path):
    seen = []
    result = jobs.run_job(sys.executable, "toy_worker", "ok", {"x": 21}, tmp_path / "job",
                          seen.append, env=worker)
    assert result == {"doubled": 42}
    assert [e["done"] for e in seen if e["type"] == "progress"] == [1, 2, 3]
    assert "must not break" in (tmp_path / "job" / "logs" / "ok.log").read_text()


def test_user_error_keeps_its_type_and_message(worker, tmp_path):
    with pytest.raises(BadInput, match="the corpus has no text"):
        jobs.run_job(sys.executable, "toy_worker", "user_error", {}, tmp_path / "job", env=worker)


def test_crash_reports_exit_code_and_log_tail(worker, tmp_path):
    with pytest.raises(WorkerFailed) as caught:
        jobs.run_job(sys.executable, "toy_worker", "crash", {}, tmp_path / "job", env=worker)
    message = str(caught.value)
    assert "exit code 1: RuntimeError: segment of weights is corrupt" in message
    assert "loading weights..." in message
    assert "RuntimeError: segment of weights is corrupt" in message
    assert not (tmp_path / "job" / "result-crash.json").exists()


def test_a_crash_after_the_result_is_written_keeps_the_result(worker, tmp_path):
    result = jobs.run_job(sys.executable, "toy_worker", "abort_at_exit", {}, tmp_path / "job",
                          env=worker)
    assert result == {"answer": 42}
    assert "result kept" in (tmp_path / "job" / "logs" / "abort_at_exit.log").read_text()


def test_unknown_task(worker, tmp_path):
    with pytest.raises(BadInput, match="no task 'nope'"):
        jobs.run_job(sys.executable, "toy_worker", "nope", {}, tmp_path / "job", env=worker)


def test_engines_see_thrifty_but_not_the_cli_site_packages(isolated_home):
    folder = jobs.engine_pythonpath()
    import os

    assert sorted(os.listdir(folder)) == sorted(["thrifty", jobs.PLUGINS])


def test_vllm_finds_thrifty_s_plugin_on_the_engine_path(isolated_home):
    """vLLM loads the entry points of group vllm.general_plugins in each of its processes."""
    import importlib.metadata

    folder = jobs.engine_pythonpath()
    found = [ep for dist in importlib.metadata.distributions(path=[folder])
             for ep in dist.entry_points if ep.group == "vllm.general_plugins"]
    assert [ep.value for ep in found] == ["thrifty.libs.vllm_cpu_lora:install",
                                          "thrifty.libs.vllm_lora_load:install",
                                          "thrifty.libs.vllm_lora_ids:install",
                                          "thrifty.libs.vllm_lora_device:install",
                                          "thrifty.libs.vllm_memory_trace:install"]
    for name in ("vllm_cpu_lora", "vllm_lora_load", "vllm_lora_ids", "vllm_lora_device",
                 "vllm_memory_trace"):
        assert "def install()" in (Path(folder) / "thrifty" / "libs" / f"{name}.py").read_text()


def test_worker_modules_import_without_cli_dependencies():
    """Workers run in engine envs, which have neither click nor rich."""
    import subprocess

    code = ("import importlib, sys\n"
            "sys.modules['click'] = None; sys.modules['rich'] = None\n"
            "from thrifty.core import tasks\n"
            "for task in tasks.all_tasks(): importlib.import_module(task.module)\n"
            "import thrifty.libs.vllm_server, thrifty.distill.prepare\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_likely_cause_is_an_exception_line_not_a_warning_that_quotes_one(tmp_path):
    """Lines as vLLM 0.32.0 wrote them when its engine died under adapter churn."""
    log = tmp_path / "vllm-server.log"
    log.write_text(
        "(APIServer pid=1) WARNING 12-03 14:19:15 [system_utils.py:255] Found ulimit of 20000 "
        "and failed to automatically increase with error current limit exceeds maximum limit. "
        "This can cause fd limit errors like `OSError: [Errno 24] Too many open files`. "
        "Consider increasing with ulimit -n\n"
        "(Worker pid=2) ERROR 12-03 14:25:34 [multiproc_executor.py:1063] Traceback (most "
        "recent call last):\n"
        "(Worker pid=2) ERROR 12-03 14:25:34 [multiproc_executor.py:1063] KeyError: "
        "np.int64(74)\n"
        "(EngineCore pid=3) ERROR 12-03 14:25:34 [core.py:1512] RuntimeError: Worker failed "
        "with error 'np.int64(74)', please check the stack trace above for the root cause\n")
    assert jobs.likely_cause(log) == "KeyError: np.int64(74)"
    plain = tmp_path / "job.log"
    plain.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                     "safetensors_rust.SafetensorError: Error while deserializing header\n")
    assert jobs.likely_cause(plain) == ("safetensors_rust.SafetensorError: Error while "
                                        "deserializing header")
    ranked = tmp_path / "train.log"  # torch.distributed's excepthook prefixes every line
    ranked.write_text("[rank0]: Traceback (most recent call last):\n"
                      "[rank0]: RuntimeError: don't know how to restore data location\n")
    assert jobs.likely_cause(ranked) == "RuntimeError: don't know how to restore data location"
