"""`thrifty serve` and `thrifty adapters` with the real vLLM server, SmolLM2-135M and the
demo adapters (trained with peft by `thrifty adapters demo`)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import needs_w4a16_kernel, thrifty, thrifty_json

from thrifty.assets import models
from thrifty.core import engines, jobs, tasks
from thrifty.formats.openai_api import ServerClient, ServerError
from thrifty.serve import demo_adapters

API_KEY = "test-key-123"
PROMPTS = ["The capital of", "In 1861,", "The most important thing about"]
COMPARED_TOKENS = 16
HERE = Path(__file__).resolve().parent


@dataclass
class Served:
    url: str
    client: ServerClient
    info: dict
    proc: subprocess.Popen
    allowed: Path
    outside: Path
    refused: Path  # peft adapters the server must refuse
    work: Path


def start_serve(*args: str, log: Path) -> tuple[subprocess.Popen, dict | None]:
    """Start `thrifty serve ... --json`; return the process and its readiness line (None if it
    exited first). Its run record goes beside the log."""
    env = {**os.environ, "THRIFTY_RUNS": str(log.parent / "runs")}
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "thrifty", "serve", *map(str, args),
                                 "--json"], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
    line = proc.stdout.readline()
    return proc, (json.loads(line) if line.strip() else None)


def stop_serve(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)


@pytest.fixture(scope="module")
def demo():
    trained = demo_adapters.trained(demo_adapters.default_dir())
    if len(trained) != len(demo_adapters.specs()):
        pytest.fail("The demo adapters are missing: `make test-integration` trains them "
                    "(`thrifty adapters demo`).")
    return trained


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    folder, allowed, outside, refused = (work / n for n in
                                         ("folder", "allowed", "outside", "allowed/refused"))
    shutil.copytree(demo["geography"], folder / "geography")
    shutil.copytree(demo["arts"], allowed / "arts")
    shutil.copytree(demo["arts"], outside / "arts")
    subprocess.run([engines.python_for("compress"), str(HERE / "peft_adapters.py"),
                    str(refused), models.prepared_dir(models.DEFAULT_MODEL)],
                   check=True, capture_output=True)
    proc, info = start_serve(
        "smollm2-135m", "--adapter", f"history={demo['history']}",
        "--adapter", f"chemistry={demo['chemistry']}", "--adapters-dir", folder,
        "--allow-adapters-from", allowed, "--port", 0, "--dtype", "float32",
        "--api-key", API_KEY, log=work / "serve.log")
    if info is None:
        pytest.fail(f"thrifty serve did not start:\n{(work / 'serve.log').read_text()[-3000:]}")
    url = info["url"].removesuffix("/v1")
    yield Served(url, ServerClient(url, API_KEY), info, proc, allowed, outside, refused, work)
    stop_serve(proc)


def adapters_cli(served: Served, *args: str, check: bool = True):
    return thrifty("adapters", *args, "--server", served.url, "--api-key", API_KEY, check=check)


def reference(adapter_path: Path | None, workdir: Path) -> list[list[int]]:
    """Greedy token ids from transformers + peft, in float32 like the server."""
    task = tasks.REFERENCE_GENERATE
    result = jobs.run_job(
        engines.python_for(task.engine), task.module, task.name,
        {"base_path": str(models.prepared_dir(models.DEFAULT_MODEL)),
         "adapter_path": str(adapter_path) if adapter_path else None, "prompts": PROMPTS,
         "max_tokens": COMPARED_TOKENS, "dtype": "float32"},
        workdir)
    return [o["token_ids"] for o in result["outputs"]]


def served_ids(served: Served, model: str) -> list[list[int]]:
    return [served.client.complete(model, p, COMPARED_TOKENS, return_token_ids=True).token_ids
            for p in PROMPTS]


def test_flags_are_derived_from_the_adapters(served):
    flags = served.info["flags"]
    assert (flags["max_lora_rank"], flags["max_loras"]) == (8, 3)  # rank 8; 2 + 1 in the folder
    assert served.info["adapters"] == ["history", "chemistry"]


def test_adapter_output_equals_transformers_peft_and_differs_from_base(served, demo):
    base = served_ids(served, "smollm2-135m")
    assert base == reference(None, served.work / "reference")
    outputs = {}
    for name in ("history", "chemistry"):
        outputs[name] = served_ids(served, name)
        assert outputs[name] == reference(demo[name], served.work / "reference"), name
        assert outputs[name] != base
    assert outputs["history"] != outputs["chemistry"]


def test_an_adapter_in_the_folder_is_served_by_name(served):
    base = served.client.complete("smollm2-135m", PROMPTS[0], COMPARED_TOKENS).text
    assert served.client.complete("geography", PROMPTS[0], COMPARED_TOKENS).text != base
    listed = json.loads(adapters_cli(served, "list", "--json").stdout)
    assert "geography" in {m["id"] for m in listed["models"]}
    with pytest.raises(ServerError) as missing:
        served.client.complete("not-in-folder", PROMPTS[0], 4)
    assert missing.value.status == 404


def test_hot_load_then_unload(served):
    adapters_cli(served, "load", "arts", served.allowed / "arts")
    assert served.client.complete("arts", PROMPTS[0], 8).output_tokens == 8
    adapters_cli(served, "unload", "arts")
    with pytest.raises(ServerError) as gone:
        served.client.complete("arts", PROMPTS[0], 8)
    assert gone.value.status == 404
    assert served.client.complete("history", PROMPTS[0], 8).output_tokens == 8
    again = adapters_cli(served, "unload", "arts", check=False)
    assert again.returncode == 1
    assert "No adapter named 'arts' is loaded" in again.stderr and "Traceback" not in again.stderr


def test_loading_and_unloading_loses_no_request_in_flight(served):
    failures, done = [], []
    stop = threading.Event()

    def traffic(models_cycle):
        turn = 0
        while not stop.is_set():
            model = models_cycle[turn % len(models_cycle)]
            turn += 1
            try:
                result = served.client.stream(model, PROMPTS[turn % 3], 16, ignore_eos=True)
                done.append(result.output_tokens)
            except ServerError as exc:
                failures.append(f"{model}: {exc}")

    threads = [threading.Thread(target=traffic, args=(cycle,)) for cycle in
               (["smollm2-135m", "history"], ["chemistry", "geography"], ["history"])]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(3):
            served.client.load_adapter(f"arts-{round_number}", str(served.allowed / "arts"))
            assert served.client.complete(f"arts-{round_number}", PROMPTS[0], 4).output_tokens
            served.client.unload_adapter(f"arts-{round_number}")
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert not failures
    assert len(done) >= 6 and set(done) == {16}


def test_an_adapter_reloaded_under_its_name_while_in_use(served, demo):
    """The old load's requests finish on the old weights, new ones get the new weights and the
    engine survives (vLLM 0.32.0 alone dies: libs/vllm_lora_ids.py)."""
    shutil.copytree(demo["chemistry"], served.allowed / "chemistry-copy", dirs_exist_ok=True)
    old, new = served.allowed / "arts", served.allowed / "chemistry-copy"
    served.client.load_adapter("swapped", str(old))
    before = served.client.complete("swapped", PROMPTS[1], 8).text
    expected = served.client.complete("chemistry", PROMPTS[0], 8).text
    running = {}

    def stream_old_load():
        try:
            running["result"] = served.client.stream("swapped", PROMPTS[1], 300, ignore_eos=True)
        except ServerError as exc:
            running["error"] = exc

    long_stream = threading.Thread(target=stream_old_load)
    long_stream.start()
    time.sleep(1.0)  # the old load's request is in the engine's batch
    served.client.unload_adapter("swapped")
    served.client.load_adapter("swapped", str(new))
    # two other adapters take the batch slots: the new load's id is no longer active
    assert served.client.complete("chemistry", PROMPTS[0], 4).output_tokens == 4
    assert served.client.complete("geography", PROMPTS[0], 4).output_tokens == 4
    assert served.client.complete("swapped", PROMPTS[0], 8).text == expected
    # still running after that answer: the old and the new load shared the engine's batches
    assert long_stream.is_alive(), "the old load's request ended too soon to test anything"
    long_stream.join(timeout=300)
    assert "error" not in running, running.get("error")
    assert running["result"].output_tokens == 300
    assert running["result"].text.startswith(before)
    served.client.unload_adapter("swapped")


@pytest.mark.parametrize("folder,message", [
    ("refused/other-base", "does not fit the base model smollm2-135m"),
    ("refused/rank16", "rank 16, above this server's limit of 8"),
    ("refused/pickle-only", "only pickle weights"),
    ("missing", "does not exist"),
])
def test_the_server_refuses_unusable_adapters(served, folder, message):
    result = adapters_cli(served, "load", "bad", served.allowed / folder, check=False)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_adapters_outside_the_allowed_folders_are_refused(served):
    result = adapters_cli(served, "load", "arts-outside", served.outside / "arts", check=False)
    assert result.returncode == 1 and "is outside the folders this server" in result.stderr
    with pytest.raises(ServerError) as direct:  # the rule holds for any client, not only thrifty's
        served.client.load_adapter("arts-outside", str(served.outside / "arts"))
    assert direct.value.status == 403


def test_the_api_key_is_required(served):
    with pytest.raises(ServerError) as caught:
        ServerClient(served.url).models()
    assert caught.value.status == 401


def test_a_busy_port_is_reported_before_vllm_starts(served, tmp_path):
    port = served.url.rsplit(":", 1)[1]
    started = time.monotonic()
    result = thrifty("serve", "smollm2-135m", "--port", port, check=False)
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert time.monotonic() - started < 30


def test_sigterm_stops_the_server_and_everything_it_started(served):
    server_pid = served.info["server_pid"]
    stop_serve(served.proc)
    assert served.proc.returncode == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(server_pid, 0)  # the server runs as its own process group
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("processes of the server's group are still running")
    assert not served.client.healthy()
    result = json.loads((Path(served.info["run"]) / "result.json").read_text())
    assert result["status"] == "ok" and result["measured"]["startup_s"] > 0


@needs_w4a16_kernel
def test_a_quantized_base_serves_the_adapters(demo, tmp_path):
    quantized = tmp_path / "rtn"
    thrifty_json("quantize", "smollm2-135m", "--method", "rtn", "--out", quantized,
                 "--no-verify")
    proc, info = start_serve(quantized, "--adapter", f"history={demo['history']}", "--port", 0,
                             log=tmp_path / "serve.log")
    try:
        assert info, (tmp_path / "serve.log").read_text()[-3000:]
        client = ServerClient(info["url"])
        base = client.complete("rtn", PROMPTS[1], COMPARED_TOKENS).text
        adapted = client.complete("history", PROMPTS[1], COMPARED_TOKENS).text
        assert base and adapted and adapted != base
    finally:
        stop_serve(proc)


def edited_default_model(folder: Path, **config_fields) -> Path:
    """The default model's files linked into `folder`, its config.json edited."""
    folder.mkdir()
    source = models.prepared_dir(models.DEFAULT_MODEL)
    for item in source.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_fields}))
    return folder


def test_a_base_vllm_cannot_load_fails_with_the_cause(tmp_path):
    # a model class vLLM does not have is refused before vLLM starts
    unknown = edited_default_model(tmp_path / "unknown", architectures=["NoSuchModelForCausalLM"])
    proc, info = start_serve(unknown, "--port", 0, log=tmp_path / "unknown.log")
    proc.wait(timeout=300)
    stderr = (tmp_path / "unknown.log").read_text()
    assert info is None and proc.returncode == 1
    assert "'NoSuchModelForCausalLM', which vLLM" in stderr and "Traceback" not in stderr
    # weights that do not fit their config pass every file check and fail inside vLLM
    broken = edited_default_model(tmp_path / "broken", hidden_size=64)
    proc, info = start_serve(broken, "--port", 0, log=tmp_path / "serve.log")
    proc.wait(timeout=300)
    stderr = (tmp_path / "serve.log").read_text()
    assert info is None and proc.returncode == 1
    assert "vLLM's server exited" in stderr
    assert "Traceback (most recent call last)" not in stderr.split("Last lines of the log")[0]
