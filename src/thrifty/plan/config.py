"""`thrifty plan`'s inputs as one typed config, checked before any stage starts."""

import difflib
import re
from dataclasses import dataclass, field

from thrifty.core.errors import BadInput

# Each variant a plan can make, as the `thrifty quantize` arguments that make it (bf16: the
# model as it is). Calibrated methods get --num-samples/--seq-len from the plan's options.
VARIANT_ARGS: dict[str, tuple[str, ...]] = {
    "bf16": (),
    "w8a8": ("--scheme", "W8A8"),
    "w8a8-rtn": ("--scheme", "W8A8", "--method", "rtn", "--smoothquant", "0"),
    "fp8": ("--scheme", "FP8_DYNAMIC"),
    "w4a16-gptq": ("--scheme", "W4A16_ASYM", "--method", "gptq"),
    "w4a16-awq": ("--scheme", "W4A16_ASYM", "--method", "awq"),
    "w4a16-awq-gptq": ("--scheme", "W4A16_ASYM", "--method", "awq-gptq"),
    "w4a16-rtn": ("--scheme", "W4A16_ASYM", "--method", "rtn"),
}
UNCALIBRATED = {"bf16", "w8a8-rtn", "fp8", "w4a16-rtn"}
FLOOR_KEYS = {"top1": "top1_agreement_pct", "kld": "kld_mean", "ppl": "perplexity_delta_pct"}


@dataclass(frozen=True)
class QualityFloor:
    """The least quality a variant must keep against the base: top-1 agreement at least
    `top1` %, mean KLD at most `kld` nats, perplexity at most `ppl_pct` % above the base."""
    top1: float | None = None
    kld: float | None = None
    ppl_pct: float | None = None

    def shortfalls(self, quality: dict) -> list[str]:
        """What the variant misses, each with its distance from the floor; [] when it passes."""
        misses = []
        top1, kld, ppl = (quality.get(k) for k in FLOOR_KEYS.values())
        for name, limit, value in (("top-1 agreement", self.top1, top1),
                                   ("KLD", self.kld, kld), ("perplexity", self.ppl_pct, ppl)):
            if limit is not None and value is None:
                misses.append(f"{name} was not measured (its eval compared no tokens with "
                              "the base)")
        if self.top1 is not None and top1 is not None and top1 < self.top1:
            misses.append(f"top-1 agreement {top1:.1f}% < {self.top1:g}% "
                          f"({self.top1 - top1:.1f} points short)")
        if self.kld is not None and kld is not None and kld > self.kld:
            misses.append(f"KLD {kld:.4f} > {self.kld:g} ({kld / self.kld:.1f}x the limit)")
        if self.ppl_pct is not None and ppl is not None and ppl > self.ppl_pct:
            misses.append(f"perplexity {ppl:+.1f}% > +{self.ppl_pct:g}% "
                          f"({ppl - self.ppl_pct:.1f} points over)")
        return misses

    def as_dict(self) -> dict:
        return {"top1_agreement_pct_min": self.top1, "kld_mean_max": self.kld,
                "perplexity_delta_pct_max": self.ppl_pct, "text": self.text()}

    def text(self) -> str:
        parts = [f"top-1 >= {self.top1:g}%" if self.top1 is not None else "",
                 f"KLD <= {self.kld:g}" if self.kld is not None else "",
                 f"perplexity <= +{self.ppl_pct:g}%" if self.ppl_pct is not None else ""]
        return ", ".join(p for p in parts if p) or "none"


def parse_floor(text: str | None) -> QualityFloor:
    """'top1=95,kld=0.05,ppl=+5%' -> a QualityFloor (any subset)."""
    if not text:
        return QualityFloor()
    values: dict[str, float] = {}
    for item in text.split(","):
        key, _, raw = item.strip().partition("=")
        number = re.fullmatch(r"\+?(\d+(?:\.\d+)?)%?", raw.strip())
        if key not in FLOOR_KEYS or not number or key in values:
            raise BadInput(f"--quality-floor {text!r}: {item.strip()!r} is not one of top1=PCT "
                           "(least top-1 agreement with the base, %), kld=NATS (largest mean KL "
                           "divergence) or ppl=+PCT% (largest perplexity rise), each at most "
                           "once; e.g. --quality-floor top1=95,ppl=+5%.")
        values[key] = float(number.group(1))
    if "top1" in values and not 0 < values["top1"] <= 100:
        raise BadInput(f"--quality-floor top1={values['top1']:g} is not a percentage in (0, 100].")
    if values.get("kld") == 0:
        raise BadInput("--quality-floor kld=0 asks for a variant identical to the base; give "
                       "the largest mean KL divergence you accept, e.g. kld=0.05.")
    return QualityFloor(values.get("top1"), values.get("kld"), values.get("ppl"))


def parse_variants(text: str) -> tuple[str, ...]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in VARIANT_ARGS:
            close = difflib.get_close_matches(name, VARIANT_ARGS, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise BadInput(f"--variants: unknown variant {name!r}.{hint} The variants are "
                           f"{', '.join(VARIANT_ARGS)}.")
    if not names or len(set(names)) != len(names):
        raise BadInput(f"--variants {text!r}: name each variant once, e.g. bf16,w8a8,w4a16-gptq.")
    return tuple(names)


def check_gpus(requested: tuple[str, ...], catalog: dict[str, list[str]]) -> None:
    """Refuse a GPU the catalog lacks, naming the nearest ids (catalog: id -> aliases)."""
    known = {name: gpu for gpu, aliases in catalog.items() for name in (gpu, *aliases)}
    for name in requested:
        if name.lower() not in known:
            close = difflib.get_close_matches(name.lower(), known, n=2, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise BadInput(f"--gpus: {name!r} is not in the GPU catalog.{hint} `thrifty gpus` "
                           "lists them; add your own with a [[gpu]] table in "
                           "$THRIFTY_HOME/gpus.toml.")


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float | None
    tokens_per_month: float | None
    input_tokens: int
    output_tokens: int
    peak_factor: float

    def cost_args(self) -> list[str]:
        volume = (["--requests-per-day", repr(self.requests_per_day)]
                  if self.requests_per_day is not None
                  else ["--tokens-per-month", repr(self.tokens_per_month)])
        return [*volume, "--input-tokens", str(self.input_tokens), "--output-tokens",
                str(self.output_tokens), "--peak-factor", repr(self.peak_factor)]


@dataclass(frozen=True)
class BenchProfile:
    """The load `thrifty bench` puts on each variant here."""
    concurrency: str = "1,4"
    requests: int = 16
    input_tokens: int = 128
    output_tokens: int = 32
    # the context the server is started with, and so the one the manifests deploy: at least
    # the traffic's prompt + completion
    max_model_len: int = 2048

    def args(self) -> list[str]:
        return ["--concurrency", self.concurrency, "--requests", str(self.requests),
                "--input-tokens", str(self.input_tokens), "--output-tokens",
                str(self.output_tokens), "--max-model-len", str(self.max_model_len)]


@dataclass(frozen=True)
class PlanConfig:
    model: str
    adapters: dict[str, str]
    traffic: Traffic
    slo_text: str
    floor: QualityFloor
    variants: tuple[str, ...]
    gpus: tuple[str, ...]
    budget_usd: float | None
    out: str
    calibration_samples: int = 32
    calibration_seq_len: int = 256
    eval_tokens: int = 4096
    tasks: tuple[str, ...] = ()
    bench: BenchProfile = field(default_factory=BenchProfile)
    pricing: str = "on-demand"
    emit: tuple[str, ...] = ()
    resume: bool = False
    force: bool = False

    def quantize_args(self, variant: str) -> list[str]:
        args = list(VARIANT_ARGS[variant])
        if variant not in UNCALIBRATED:
            args += ["--num-samples", str(self.calibration_samples),
                     "--seq-len", str(self.calibration_seq_len)]
        return args
