"""The bad-input battery: every input thrifty refuses before work starts, with the phrase its
message must hold. tests/fast/test_bad_inputs.py runs it; scripts/errors_doc.py renders the
same runs into docs/errors.md, so the list there cannot drift from what thrifty says.

Each case builds its inputs in an empty folder and returns the command line; the run must
exit non-zero with one paragraph (no traceback) holding `phrase`, and write nothing in the
folder. Engines are pointed at /bin/false: a case that got as far as an engine fails loudly.
"""

import json
import os
import re
import shlex
import struct
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner
from safetensors_files import LLAMA, make_adapter, make_base, make_model_folder

from thrifty.cli import cli
from thrifty.core import hardware


@dataclass(frozen=True)
class Case:
    command: str  # the section in docs/errors.md
    what: str  # the bad input, in a user's words
    build: Callable[[Path], list]  # makes the inputs under a folder, returns the arguments
    phrase: str  # what the message must say


def model(folder: Path, name: str = "model", **config) -> Path:
    return make_model_folder(folder / name, **config)


def damaged_weights(content: bytes) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        (model(folder) / "model.safetensors").write_bytes(content)
        return ["eval", folder / "model"]
    return build


def with_header(header: dict, data: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def edited_config(edit: Callable[[dict], object]) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        path = model(folder) / "config.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        return ["eval", folder / "model"]
    return build


def model_files(*remove: str, add: dict[str, bytes] | None = None) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        path = model(folder)
        for name in remove:
            (path / name).unlink()
        for name, content in (add or {}).items():
            (path / name).write_bytes(content)
        return ["eval", path]
    return build


def adapter_case(**fields) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        base = make_base(folder / "base")
        extra = dict(fields)  # the case may be built more than once
        spec = extra.pop("spec", LLAMA)
        adapter = make_adapter(folder / "adapter", spec=spec, **extra)
        return ["quantize", base, "--adapter", adapter, "--out", folder / "out"]
    return build


def truncated_adapter(folder: Path) -> list:
    args = adapter_case()(folder)
    weights = folder / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return args


def index_naming(*shards: str) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        path = model(folder)
        weight_map = {f"t{i}": shard for i, shard in enumerate(shards)}
        (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        return ["eval", path]
    return build


def existing_out(folder: Path) -> list:
    (folder / "out").mkdir()
    (folder / "out" / "keep.txt").write_text("precious")
    return ["quantize", model(folder), "--method", "rtn", "--out", folder / "out"]


def corpus_file(text: str) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        (folder / "corpus.jsonl").write_text(text)
        return ["eval", model(folder), "--corpus", folder / "corpus.jsonl"]
    return build


def serve_with(*args: str) -> Callable[[Path], list]:
    return lambda folder: ["serve", model(folder), *args]


ONE_TENSOR = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
MODEL_CASES = [
    Case("models", "the model path is a file", lambda f: (
        (f / "weights.safetensors").write_bytes(b""), ["eval", f / "weights.safetensors"])[1],
        "is a file"),
    Case("models", "neither a built-in name, a folder nor a hub id", lambda f: [
        "eval", "no such model"], "not a built-in model"),
    Case("models", "a folder without config.json", model_files("config.json"),
         "has no config.json"),
    Case("models", "config.json that is not JSON", model_files(add={"config.json": b"{"}),
         "is not valid JSON"),
    Case("models", "config.json that is a JSON list", edited_config(lambda c: [c]),
         "not an object"),
    Case("models", "config.json without \"architectures\"", edited_config(
        lambda c: {k: v for k, v in c.items() if k != "architectures"}), "names no model class"),
    Case("models", "config.json without \"model_type\"", edited_config(
        lambda c: {k: v for k, v in c.items() if k != "model_type"}), "has no \"model_type\""),
    Case("models", "only pickle weights", model_files("model.safetensors", add={
        "pytorch_model.bin": b"\0"}), "only pickle weights"),
    Case("models", "no weights at all", model_files("model.safetensors"), "no weights"),
    Case("models", "a safetensors file shorter than its length prefix",
         damaged_weights(b"\x10\0"), "too short for a safetensors file"),
    Case("models", "a safetensors header longer than the file",
         damaged_weights(struct.pack("<Q", 4096) + b"{}"), "declares a 4,096-byte header"),
    Case("models", "a safetensors header that is not JSON",
         damaged_weights(struct.pack("<Q", 4) + b"{{{{"), "is not valid JSON"),
    Case("models", "a truncated safetensors file (an interrupted copy)",
         damaged_weights(with_header(ONE_TENSOR, 10)), "(6 bytes missing)"),
    Case("models", "bytes after the last tensor that the header does not describe",
         damaged_weights(with_header(ONE_TENSOR, 20)), "does not describe"),
    Case("models", "a tensor without byte offsets in the header",
         damaged_weights(with_header({"w": {"dtype": "F32", "shape": [4]}}, 0)),
         "no valid \"data_offsets\""),
    Case("models", "an index naming shards that are missing",
         index_naming("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
         "names 2 weight file(s) that are not in the folder"),
    Case("models", "an index that is not JSON", model_files(add={
        "model.safetensors.index.json": b"nope"}), "is not a safetensors index"),
    Case("models", "no tokenizer files", model_files("tokenizer.json"), "no tokenizer files"),
]

OUTPUT_CASES = [
    Case("outputs", "quantize --out names an existing folder (no --force)", existing_out,
         "already exists. Pass --force"),
    Case("outputs", "quantize --out inside the model folder", lambda f: [
        "quantize", model(f), "--method", "rtn", "--out", f / "model" / "q"],
        "is inside the model"),
]

ADAPTER_CASES = [
    Case("adapters", "an adapter trained on another base (shapes differ)",
         adapter_case(spec={**LLAMA, "hidden": 128}), "does not fit the base model"),
    Case("adapters", "a DoRA adapter", adapter_case(use_dora=True), "is a DoRA adapter"),
    Case("adapters", "an adapter that trains biases", adapter_case(bias="all"), "trains biases"),
    Case("adapters", "an adapter saving whole modules", adapter_case(
        modules_to_save=["lm_head"]), "fully trained modules"),
    Case("adapters", "an IA3 adapter", adapter_case(peft_type="IA3"), "is of type IA3"),
    Case("adapters", "an adapter folder without weights", adapter_case(weights=False),
         "no adapter_model.safetensors"),
    Case("adapters", "truncated adapter weights", truncated_adapter, "is truncated"),
    Case("adapters", "an adapter path that does not exist", lambda f: [
        "quantize", make_base(f / "base"), "--adapter", f / "nowhere", "--out", f / "out"],
        "does not exist"),
    Case("adapters", "an adapter name vLLM cannot use as a model name", serve_with(
        "--adapter", "bad name=x"), "not usable as a model name"),
]

DATA_CASES = [
    Case("data", "eval --corpus names a missing file", lambda f: [
        "eval", model(f), "--corpus", f / "missing.txt"], "missing.txt"),
    Case("data", "a JSONL corpus line that is not JSON", corpus_file('{"text": "a"}\nnot json\n'),
         "line 2 is not valid JSON"),
]


def plan_with(*args: str) -> Callable[[Path], list]:
    return lambda folder: ["plan", model(folder), "--requests-per-day", "1000", "--slo",
                           "ttft_ms=500,tpot_ms=50", "--out", folder / "plan", *args]


def catalog_file(text: str) -> Callable[[Path], list]:
    def build(folder: Path) -> list:
        (folder / "gpus.toml").write_text(text)
        return ["cost", "plan", "smollm2-135m", "--requests-per-day", "1000", "--catalog",
                folder / "gpus.toml"]
    return build


COMMAND_CASES = [
    Case("bench", "--adapter-mix weights that are not numbers", lambda f: [
        "bench", "--url", "http://127.0.0.1:9", "--adapter-mix", "a=x"], "--adapter-mix"),
    Case("bench", "--slo with an unknown metric", lambda f: [
        "bench", "--url", "http://127.0.0.1:9", "--slo", "ttft=5"], "--slo"),
    Case("bench", "bench latency cases longer than --max-model-len", lambda f: [
        "bench", "latency", "--model", model(f), "--input-tokens", "4000", "--output-tokens",
        "200", "--max-model-len", "2048"], "needs 4200 tokens"),
    Case("cost", "an unknown GPU (with a did-you-mean)", lambda f: [
        "cost", "plan", "smollm2-135m", "--requests-per-day", "1000", "--gpu", "h1000"],
        "Did you mean 'h100'"),
    Case("cost", "a --catalog file that is not TOML", catalog_file("[[gpu]\n"), "gpus.toml"),
    Case("plan", "an unknown variant (with a did-you-mean)", plan_with("--variants", "w4a16-gptx"),
         "w4a16-gptq"),
    Case("plan", "a quality floor that is not top1=, kld= or ppl=", plan_with(
        "--quality-floor", "accuracy=90"), "--quality-floor"),
    Case("plan", "a hub id instead of a local model", lambda f: [
        "plan", "org/model", "--requests-per-day", "1000", "--slo", "ttft_ms=500",
        "--out", f / "plan"], "thrifty plan needs a local model: org/model is a hub id"),
    Case("distill", "a derived student keeping more layers than the teacher has", lambda f: [
        "distill", "--teacher", model(f, num_hidden_layers=4), "--student-from-teacher",
        "--keep-layers", "8", "--out", f / "d"],
        "--keep-layers 8 is not fewer than the 4 layers"),
    Case("distill", "both --student and --student-from-teacher", lambda f: [
        "distill", "--teacher", model(f), "--student", model(f, "s"), "--student-from-teacher",
        "--keep-layers", "2", "--out", f / "d"], "not both"),
    Case("serve", "--tensor-parallel-size above this machine's GPUs", serve_with(
        "--tensor-parallel-size", "2"), "needs 2 GPUs"),
]


def cases() -> list[Case]:
    return [*MODEL_CASES, *OUTPUT_CASES, *ADAPTER_CASES, *DATA_CASES, *COMMAND_CASES]


@contextmanager
def sandbox(folder: Path):
    """THRIFTY_HOME and the run records under `folder`, engines that fail at once, and no GPU
    in sight (nvidia-smi off the PATH), so every message reads the same on every machine."""
    saved = dict(os.environ)
    path = [d for d in saved.get("PATH", "").split(os.pathsep)
            if not (Path(d) / "nvidia-smi").exists()]
    os.environ.update({"THRIFTY_HOME": str(folder / SANDBOX_HOME),
                       "THRIFTY_RUNS": str(folder / SANDBOX_RUNS),
                       "THRIFTY_VLLM_PYTHON": "/bin/false", "PATH": os.pathsep.join(path),
                       "THRIFTY_COMPRESS_PYTHON": "/bin/false", "HF_HUB_OFFLINE": "1"})
    os.environ.pop("THRIFTY_DEBUG", None)
    hardware.gpus.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        hardware.gpus.cache_clear()


SANDBOX_HOME, SANDBOX_RUNS = ".home", ".runs"


def files_under(folder: Path) -> set[str]:
    """Everything under `folder` but the sandbox's home and run records (a `.NAME.partial-PID`
    left beside an output counts)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.relative_to(folder).parts[0] not in (SANDBOX_HOME, SANDBOX_RUNS)}


def run(case: Case, folder: Path) -> dict:
    """Run one case in `folder`: exit code, message (folder shown as DIR), what appeared."""
    with sandbox(folder):
        args = [str(a) for a in case.build(folder)]
        before = files_under(folder)
        result = CliRunner().invoke(cli, args, prog_name="thrifty")
        written = sorted(files_under(folder) - before)
    message = " ".join(result.output.split()).replace(str(folder), "DIR").replace(
        str(Path.cwd()), "CWD")
    command = shlex.join(args).replace(str(folder), "DIR")
    return {"exit_code": result.exit_code, "message": message, "written": written,
            "command": f"thrifty {command}"}


def markdown(results: list[tuple[Case, dict]]) -> str:
    lines = ["# What thrifty refuses, and what it says", "",
             "Every input below is refused before any work starts: a non-zero exit, this one "
             "paragraph (no traceback unless `--debug`), nothing written. Generated by "
             "`python scripts/errors_doc.py` from the cases in tests/bad_inputs.py, which the "
             "fast tests run; DIR stands for the folder the inputs were in.", ""]
    section = None
    for case, result in results:
        if case.command != section:
            section = case.command
            lines += [f"## {section}", ""]
        message = re.sub(r"^Error: ", "", result["message"])
        lines += [f"**{case.what}** (`{result['command']}`)", "", f"> {message}", ""]
    return "\n".join(lines)
