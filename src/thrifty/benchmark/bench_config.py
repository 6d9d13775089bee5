"""`thrifty bench run`'s options as one typed config, and their checks before anything starts."""

from dataclasses import dataclass, fields

from thrifty.benchmark import workload
from thrifty.core import stats
from thrifty.core.errors import BadInput


@dataclass(frozen=True)
class BenchConfig:
    """Every option of `thrifty bench run`, as click hands them over (field order = option
    order, so that the run's config.json keeps its key order)."""
    url: str | None
    model: str | None
    adapter_specs: tuple[str, ...]
    adapters_dir: str | None
    api_key: str | None
    served_model: str | None
    input_tokens: str
    output_tokens: str
    prompts_file: str | None
    tokenizer: str | None
    requests_count: int | None
    duration_s: float | None
    concurrency: str | None
    rate: str | None
    arrivals: str
    max_concurrency: int | None
    warmup_count: int
    seed: int
    slo_text: str | None
    slo_percent: float
    mix_text: str | None
    allow_eos: bool
    label: str | None
    dtype: str
    max_model_len: int
    sample_every_s: float
    timeout_s: float
    as_json: bool

    def as_record(self) -> dict:
        """The options for the run record; the API key is a secret and stays out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}


@dataclass(frozen=True)
class BenchOptions:
    """What the text options mean, parsed once."""
    slo: dict[str, float] | None
    mix: dict[str, float] | None
    input_len: workload.LengthSpec
    output_len: workload.LengthSpec
    kind: str  # "concurrency", or the arrival process of an open loop
    loads: list[float]
    file_prompts: list[workload.Prompt] | None  # read up front, so a bad file fails early


def parse_floats(text: str, option: str, integer: bool = False) -> list[float]:
    try:
        values = [int(v) if integer else float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        kind = "positive whole numbers" if integer else "positive numbers"
        raise BadInput(f"{option} {text!r} must be a comma-separated list of {kind}, for "
                       f"example {option} {'1,4,16' if integer else '0.5,2,8'}.")
    return values


def check(config: BenchConfig) -> BenchOptions:
    """Check every option before anything slow starts."""
    if bool(config.url) == bool(config.model):
        raise BadInput("Give exactly one of --url (a running server) or --model (a model "
                       "thrifty serves for the run).")
    if config.url and (config.adapter_specs or config.adapters_dir):
        raise BadInput("--adapter and --adapters-dir start adapters with --model; a --url "
                       "server has its own (load them with `thrifty adapters load`).")
    if config.concurrency and config.rate:
        raise BadInput("Give either --concurrency (closed loop) or --rate (open loop); cap an "
                       "open loop's requests in flight with --max-concurrency.")
    slo = stats.parse_slo(config.slo_text) if config.slo_text else None
    mix = workload.parse_adapter_mix(config.mix_text) if config.mix_text else None
    input_len = workload.parse_length(config.input_tokens, "--input-tokens")
    output_len = workload.parse_length(config.output_tokens, "--output-tokens")
    kind = "concurrency" if not config.rate else config.arrivals
    loads = (parse_floats(config.rate, "--rate") if config.rate
             else parse_floats(config.concurrency or "1,4,16", "--concurrency", integer=True))
    file_prompts = None
    if config.prompts_file:
        file_prompts = workload.read_prompts_file(config.prompts_file, output_len, config.seed)
    return BenchOptions(slo, mix, input_len, output_len, kind, loads, file_prompts)
