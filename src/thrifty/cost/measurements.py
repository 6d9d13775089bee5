"""A file of measured vLLM serving runs (one row per load stage or whole run), read into what
the scheduler replay needs: the model, the GPUs, vLLM's limits and the workload each row states.

The format is the one of the public H100 measurements shipped in
benchmarks/data/h100-measurements (inference-perf runs: Poisson-like arrivals at a stated rate
for a stated duration, a fixed set of prompts sent round-robin, outputs of a fixed length).
Model configs are looked up as `configs/<org>__<name>/config.json` beside the file.
"""

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.cost import model_shape
from thrifty.cost.catalog import Catalog, Gpu
from thrifty.cost.model_shape import GIB, ModelShape

REQUIRED = ("row_id", "stage_index", "stage_schedule", "gpu", "tp", "model", "max_num_seqs",
            "max_num_batched_tokens", "cpu_offload", "num_unique_prompts",
            "system_prompt_len", "input_tokens_nominal", "output_tokens_requested",
            "ttft_ms_mean", "e2e_ms_mean", "quality_flag")
BLOCK_TOKENS = 16  # vLLM's KV block on CUDA GPUs
CPU_OFFLOAD_GIB = 8.0  # the runs' OffloadingConnector size when the row does not give blocks
PROMPTS_PER_GROUP = 10  # prompts sharing one system prompt (the workload generator's groups)


@dataclass(frozen=True)
class Stage:
    rate_per_s: float
    duration_s: float


@dataclass(frozen=True)
class Scenario:
    """Everything a row states about how the server ran and what it was sent."""
    model: str
    shape: ModelShape
    gpu: Gpu
    tp: int
    max_num_seqs: int
    max_batched_tokens: int
    kv_tokens: int | None  # GPU KV-cache tokens, when the row measured them
    cpu_offload_tokens: int
    stages: tuple[Stage, ...]
    unique_prompts: int
    shared_prefix_tokens: int
    input_tokens: int
    output_tokens: int

    def key(self) -> tuple:
        """Rows of one experiment (its stages and the whole run) share a replay."""
        return (self.model, self.gpu.id, self.tp, self.max_num_seqs, self.max_batched_tokens,
                self.kv_tokens, self.cpu_offload_tokens, self.stages, self.unique_prompts,
                self.shared_prefix_tokens, self.input_tokens, self.output_tokens)


@dataclass(frozen=True)
class MeasuredRow:
    row_id: str
    stage_index: int  # -1: the whole run
    scenario: Scenario
    measured: dict[str, float]  # metric -> value, only what the row measured
    flag: str

    @property
    def saturated(self) -> bool:
        """Flagged overloaded or queueing: checks the model predicts saturation."""
        return "overloaded" in self.flag or "queueing" in self.flag

    @property
    def usable(self) -> bool:
        return self.flag == "ok" or self.saturated


# measured columns -> the names thrifty's predictions use; per-token time is derived from the
# means and the requested output (inference-perf's own TPOT/ITL count two events per token)
METRICS = {"ttft_ms_mean": "ttft_ms_mean", "ttft_ms_p90": "ttft_ms_p90",
           "ttft_ms_p99": "ttft_ms_p99", "e2e_ms_mean": "e2e_ms_mean",
           "e2e_ms_p90": "e2e_ms_p90", "e2e_ms_p99": "e2e_ms_p99",
           "tpot_ms_from_requested_out": "tpot_ms", "achieved_rate_rps": "requests_per_s"}


def read(path: Path, cat: Catalog, configs: Path | None = None) -> list[MeasuredRow]:
    """Every row of the file, checked; a row that cannot be derived stops with its id."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except OSError as exc:
        raise BadInput(f"Cannot read the measurements file {path}: {exc.strerror}.") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BadInput(f"The measurements file {path} lacks the column(s) {', '.join(missing)}. "
                       "It needs one row per load stage in the format of "
                       "benchmarks/data/h100-measurements (see its README).")
    if not rows:
        raise BadInput(f"The measurements file {path} has no rows.")
    configs = configs or path.parent / "configs"
    shapes: dict[str, ModelShape] = {}
    return [_row(raw, cat, configs, shapes) for raw in rows]


def _row(raw: dict, cat: Catalog, configs: Path, shapes: dict) -> MeasuredRow:
    row_id = raw["row_id"]

    def number(column: str, kind=float):
        text = (raw.get(column) or "").strip()
        try:
            return kind(float(text))
        except ValueError:
            raise BadInput(f"Row {row_id}, column {column}: {text!r} is not a number, and the "
                           "workload cannot be derived without it.") from None

    model = raw["model"].strip()
    if model not in shapes:
        shapes[model] = _shape(model, configs, row_id)
    try:
        gpu = cat.find(raw["gpu"].strip())
    except BadInput as exc:
        raise BadInput(f"Row {row_id}, column gpu: {exc}") from None
    scenario = Scenario(
        model=model, shape=shapes[model], gpu=gpu, tp=number("tp", int),
        max_num_seqs=number("max_num_seqs", int),
        max_batched_tokens=number("max_num_batched_tokens", int),
        kv_tokens=_optional_blocks(raw, "gpu_kv_blocks_16tok"),
        cpu_offload_tokens=_offload_tokens(raw, shapes[model]),
        stages=_stages(raw["stage_schedule"], row_id),
        unique_prompts=number("num_unique_prompts", int),
        shared_prefix_tokens=number("system_prompt_len", int),
        input_tokens=round(float(raw.get("input_tokens_measured_mean") or
                                 number("input_tokens_nominal"))),
        output_tokens=number("output_tokens_requested", int))
    stage = number("stage_index", int)
    if stage >= len(scenario.stages):
        raise BadInput(f"Row {row_id}, column stage_index: stage {stage} is not in its schedule "
                       f"{raw['stage_schedule']!r}.")
    measured = {name: float(raw[col]) for col, name in METRICS.items()
                if (raw.get(col) or "").strip()}
    return MeasuredRow(row_id, stage, scenario, measured, raw["quality_flag"].strip())


def _shape(model: str, configs: Path, row_id: str) -> ModelShape:
    config = configs / model.replace("/", "__") / "config.json"
    if not config.is_file():
        raise BadInput(f"Row {row_id}, column model: no config for {model} at {config}. Put the "
                       "model's config.json there (or pass --configs DIR).")
    return model_shape.from_file(config, model)


STAGE = re.compile(r"^\s*([0-9.]+)\s*rps\s*x\s*([0-9.]+)\s*s\s*$")


def _stages(text: str, row_id: str) -> tuple[Stage, ...]:
    stages = []
    for part in text.split(";"):
        match = STAGE.match(part)
        if not match:
            raise BadInput(f"Row {row_id}, column stage_schedule: {part!r} is not "
                           "'<rate>rps x <seconds>s' (stages separated by ';').")
        stages.append(Stage(float(match[1]), float(match[2])))
    return tuple(stages)


def _optional_blocks(raw: dict, column: str) -> int | None:
    text = (raw.get(column) or "").strip()
    return int(float(text)) * BLOCK_TOKENS if text else None


def _offload_tokens(raw: dict, shape: ModelShape) -> int:
    if not raw["cpu_offload"].strip().lower().startswith("true"):
        return 0
    blocks = _optional_blocks(raw, "cpu_kv_blocks_16tok")
    if blocks is not None:
        return blocks
    return int(CPU_OFFLOAD_GIB * GIB / shape.kv_bytes_per_token)
