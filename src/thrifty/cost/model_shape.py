"""A model's shape, read from its config.json: what memory and throughput models need.

Reads a Hugging Face config (and its quantization_config) for decoder-only transformers with a
gated MLP (Llama, Mistral, Qwen2, Gemma, SmolLM...). Parameter counts come from the config,
so a 70B model can be sized from its 1 KB config.json without its weights.
"""

import json
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

from thrifty.assets import models
from thrifty.core.errors import BadInput

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    weight_bits: int = 16  # bits per weight of the linear layers (16: not quantized)
    group_size: int | None = None  # quantization group; None: per channel
    activation_bits: int = 16
    kv_bytes: int = 2  # bytes per cached key or value element
    max_context: int = 4096
    source: str = ""

    # --- parameter counts
    @property
    def layer_linear_params(self) -> int:
        attention = self.hidden * self.heads * self.head_dim * 2  # q and o
        attention += self.hidden * self.kv_heads * self.head_dim * 2  # k and v
        return attention + 3 * self.hidden * self.intermediate  # gate, up, down

    @property
    def linear_params(self) -> int:
        """The decoder layers' matrices: what GPTQ/AWQ quantize."""
        return self.layers * self.layer_linear_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.linear_params + self.embedding_params + head + norms

    # --- bytes
    @property
    def linear_weight_bytes(self) -> float:
        data = self.linear_params * self.weight_bits / 8
        if self.weight_bits < 16 and self.group_size:
            data += self.linear_params / self.group_size * 2  # one 16-bit scale per group
        return data

    @property
    def weight_bytes(self) -> float:
        """All weights in memory: quantized layers; embeddings and lm_head stay 16-bit."""
        other = self.params - self.linear_params
        return self.linear_weight_bytes + other * 2

    @property
    def decode_read_bytes(self) -> float:
        """Weights read per decode step: every layer, plus the lm_head (the embedding if tied);
        the embedding lookup itself reads a few rows only."""
        return self.linear_weight_bytes + self.embedding_params * 2

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes

    # --- floating-point operations
    def matmul_flops_per_token(self) -> float:
        return 2.0 * self.linear_params

    def lm_head_flops(self) -> float:
        return 2.0 * self.embedding_params

    def attention_flops(self, query_tokens: int, context: int) -> float:
        """QK^T and AV for `query_tokens` new tokens attending to about `context` tokens."""
        return 4.0 * self.layers * self.heads * self.head_dim * query_tokens * context

    @property
    def precision(self) -> str:
        if self.weight_bits >= 16:
            return "bf16"
        act = f"a{self.activation_bits}" if self.activation_bits < 16 else "a16"
        return f"w{self.weight_bits}{act}"

    def quantized(self, weight_bits: int, group_size: int | None = 128,
                  activation_bits: int = 16) -> "ModelShape":
        return replace(self, weight_bits=weight_bits, group_size=group_size,
                       activation_bits=activation_bits)

    def as_dict(self) -> dict:
        return {**asdict(self), "params": self.params, "linear_params": self.linear_params,
                "weights_gib": round(self.weight_bytes / GIB, 3),
                "kv_bytes_per_token": self.kv_bytes_per_token, "precision": self.precision}


def known_shapes() -> dict[str, dict]:
    """Configs of common open models, shipped so they can be sized offline."""
    return json.loads((resources.files("thrifty") / "data" / "model_shapes.json").read_text())


def load(ref: str) -> ModelShape:
    """A shape from a known model name, a built-in thrifty model, a folder or a config.json."""
    known = known_shapes()
    if ref.lower() in known:
        entry = known[ref.lower()]
        return from_config(entry["config"], ref.lower(), source=entry["source"])
    if ref in models.builtin_models():
        folder = models.prepared_dir(ref)
        if not (folder / "config.json").is_file():
            raise BadInput(f"The built-in model {ref!r} is not prepared yet, so its config is not "
                           f"here. Run `thrifty models prepare {ref}` first.")
        return from_file(folder / "config.json", ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return from_file(path, ref)
    raise BadInput(f"The model {ref!r} is not a known model ({', '.join(sorted(known))}), not a "
                   "built-in thrifty model, and not a folder or config.json file. Give the path "
                   "of a Hugging Face model folder (its config.json is enough).")


def from_file(path: Path, name: str) -> ModelShape:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not a readable JSON config ({exc}).") from exc
    return from_config(config, name, source=str(path))


def from_config(config: dict, name: str, source: str = "") -> ModelShape:
    config = {**config, **config.get("text_config", {})}  # multimodal wrappers nest the LM
    if any(k in config for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise BadInput(f"{name} is a mixture-of-experts model; thrifty's memory and throughput "
                       "models cover dense decoder-only transformers only.")
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "vocab_size")
    missing = [k for k in needed if k not in config]
    if missing:
        raise BadInput(f"The config of {name} lacks {', '.join(missing)}, so thrifty cannot size "
                       "it. It supports decoder-only transformers with Llama-style configs.")
    heads = config["num_attention_heads"]
    shape = ModelShape(
        name=name, layers=config["num_hidden_layers"], hidden=config["hidden_size"], heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        intermediate=config["intermediate_size"], vocab=config["vocab_size"],
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_context=config.get("max_position_embeddings") or 4096, source=source)
    quant = config.get("quantization_config")
    return _apply_quantization(shape, quant) if quant else shape


def _apply_quantization(shape: ModelShape, quant: dict) -> ModelShape:
    method = quant.get("quant_method", "")
    if method == "compressed-tensors":
        groups = list((quant.get("config_groups") or {}).values())
        if not groups:
            return shape
        weights = groups[0].get("weights") or {}
        acts = groups[0].get("input_activations") or {}
        group = weights.get("group_size") if weights.get("strategy") == "group" else None
        return shape.quantized(int(weights.get("num_bits", 16)), group,
                               int(acts.get("num_bits", 16)) if acts else 16)
    if method in ("gptq", "awq"):
        bits = quant.get("bits") or quant.get("w_bit") or 4
        group = quant.get("group_size") or quant.get("q_group_size")
        return shape.quantized(int(bits), int(group) if group and group > 0 else None)
    if method == "fp8":
        return shape.quantized(8, None, 8)
    if method == "bitsandbytes":
        return shape.quantized(4 if quant.get("load_in_4bit") else 8, 64)
    raise BadInput(f"{shape.name} uses quantization {method!r}, which thrifty does not size yet "
                   "(it reads compressed-tensors, gptq, awq, fp8 and bitsandbytes).")


VARIANTS = {"bf16": (16, None, 16), "fp16": (16, None, 16), "w8a8": (8, None, 8),
            "w8a16": (8, 128, 16), "w4a16": (4, 128, 16)}


def variant(shape: ModelShape, name: str) -> ModelShape:
    """The same model quantized as `name` (a modelled variant, not a measured checkpoint)."""
    if name not in VARIANTS:
        raise BadInput(f"Unknown variant {name!r}; choose from {', '.join(VARIANTS)}.")
    bits, group, act = VARIANTS[name]
    if bits >= 16:
        return replace(shape, weight_bits=16, group_size=None, activation_bits=16)
    return shape.quantized(bits, group, act)
