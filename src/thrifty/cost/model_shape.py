"""A model's shape, read from its config.json: what memory and throughput models need.

Reads a Hugging Face config (and its quantization_config) for decoder-only transformers with a
gated MLP (Llama, Mistral, Qwen2, Gemma, SmolLM...), dense or mixture-of-experts (Mixtral,
Llama 4, Qwen-MoE): every expert counts for memory, the routed ones for compute. Parameter
counts come from the config, so a 70B model can be sized from its 1 KB config.json alone.
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
    intermediate: int  # the dense MLP's width (layers without experts)
    vocab: int
    tied_embeddings: bool
    weight_bits: int = 16  # bits per weight of the linear layers (16: not quantized)
    group_size: int | None = None  # quantization group; None: per channel
    activation_bits: int = 16
    kv_bytes: int = 2  # bytes per cached key or value element
    max_context: int = 4096
    source: str = ""
    weight_format: str = "int"  # "int" or "float" (FP8): which 8-bit tensor rate applies
    attention_quantized: bool = True  # False: q/k/v/o stay 16-bit (a quantization ignore list)
    # --- mixture of experts (0 experts: a dense model)
    experts: int = 0  # routed experts per MoE layer
    experts_per_token: int = 0
    expert_intermediate: int = 0  # one expert's MLP width
    shared_intermediate: int = 0  # the always-on shared experts' total MLP width
    moe_layers: int = 0

    # --- parameter counts
    @property
    def attention_params(self) -> int:
        """q, o, k and v of every layer."""
        per_layer = self.hidden * self.heads * self.head_dim * 2
        per_layer += self.hidden * self.kv_heads * self.head_dim * 2
        return self.layers * per_layer

    @property
    def layer_linear_params(self) -> int:
        """One dense layer's matrices."""
        return self.attention_params // self.layers + 3 * self.hidden * self.intermediate

    def _mlp_params(self, routed_experts: float) -> float:
        dense = (self.layers - self.moe_layers) * 3 * self.hidden * self.intermediate
        moe_layer = (routed_experts * 3 * self.hidden * self.expert_intermediate
                     + 3 * self.hidden * self.shared_intermediate + self.hidden * self.experts)
        return dense + self.moe_layers * moe_layer

    @property
    def linear_params(self) -> int:
        """The decoder layers' matrices, every expert included: what GPTQ/AWQ quantize and
        what memory holds."""
        return self.attention_params + int(self._mlp_params(self.experts))

    @property
    def active_linear_params(self) -> int:
        """The matrices one token goes through: its experts_per_token experts only."""
        return self.attention_params + int(self._mlp_params(self.experts_per_token))

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        head = 0 if self.tied_embeddings else self.embedding_params
        return self.linear_params + self.embedding_params + head + norms

    @property
    def is_moe(self) -> bool:
        return self.experts > 0 and self.moe_layers > 0

    # --- bytes
    def _quantized_bytes(self, params: float, bits: int) -> float:
        data = params * bits / 8
        if bits < 16 and self.group_size:
            data += params / self.group_size * 2  # one 16-bit scale per group
        return data

    @property
    def _attention_bits(self) -> int:
        return self.weight_bits if self.attention_quantized else 16

    def _linear_bytes(self, mlp_params: float) -> float:
        return (self._quantized_bytes(self.attention_params, self._attention_bits)
                + self._quantized_bytes(mlp_params, self.weight_bits))

    @property
    def linear_weight_bytes(self) -> float:
        return self._linear_bytes(self.linear_params - self.attention_params)

    @property
    def weight_bytes(self) -> float:
        """All weights in memory: quantized layers; embeddings and lm_head stay 16-bit."""
        other = self.params - self.linear_params
        return self.linear_weight_bytes + other * 2

    def experts_touched(self, tokens: int) -> float:
        """Routed experts of one MoE layer that `tokens` tokens use, on average, when the router
        spreads them evenly: E x (1 - (1 - k/E)^tokens). One token reads k; a batch of a few
        dozen reads nearly all of them."""
        if not self.is_moe:
            return 0.0
        k, e = self.experts_per_token, self.experts
        return e * (1 - (1 - k / e) ** max(1, tokens))

    def weight_read_bytes(self, tokens: int = 1) -> float:
        """Weights one engine step over `tokens` tokens reads: every layer (of a MoE layer, the
        experts those tokens are routed to), plus the lm_head (the embedding if tied); the
        embedding lookup itself reads a few rows only."""
        mlp = self._mlp_params(self.experts_touched(tokens))
        return self._linear_bytes(mlp) + self.embedding_params * 2

    @property
    def decode_read_bytes(self) -> float:
        """Weights read by a decode step of one sequence."""
        return self.weight_read_bytes(1)

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes

    # --- floating-point operations
    def matmul_flops_per_token(self) -> float:
        return 2.0 * self.active_linear_params

    def low_precision_flops_share(self) -> float:
        """The share of a token's matmul FLOPs that run at the 8-bit tensor rate (W8A8 and FP8
        layers); the rest (and attention kept 16-bit) runs at the 16-bit rate."""
        if self.activation_bits > 8:
            return 0.0
        if self.attention_quantized:
            return 1.0
        return 1 - self.attention_params / self.active_linear_params

    def lm_head_flops(self) -> float:
        return 2.0 * self.embedding_params

    def attention_flops(self, query_tokens: int, context: int) -> float:
        """QK^T and AV for `query_tokens` new tokens attending to about `context` tokens."""
        return 4.0 * self.layers * self.heads * self.head_dim * query_tokens * context

    @property
    def precision(self) -> str:
        if self.weight_bits >= 16:
            return "bf16"
        if self.weight_format == "float" and self.weight_bits == 8:
            return "fp8" if self.activation_bits <= 8 else "fp8-w8a16"
        act = f"a{self.activation_bits}" if self.activation_bits < 16 else "a16"
        return f"w{self.weight_bits}{act}"

    def quantized(self, weight_bits: int, group_size: int | None = 128,
                  activation_bits: int = 16, weight_format: str = "int") -> "ModelShape":
        return replace(self, weight_bits=weight_bits, group_size=group_size,
                       activation_bits=activation_bits, weight_format=weight_format)

    def as_dict(self) -> dict:
        out = {**asdict(self), "params": self.params, "linear_params": self.linear_params,
               "weights_gib": round(self.weight_bytes / GIB, 3),
               "kv_bytes_per_token": self.kv_bytes_per_token, "precision": self.precision}
        if self.is_moe:
            out["active_params"] = self.params - self.linear_params + self.active_linear_params
        return out


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
    if "kv_lora_rank" in config:
        raise BadInput(f"{name} uses multi-head latent attention (DeepSeek-style); thrifty's "
                       "memory and throughput models cover standard and grouped-query attention.")
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [k for k in needed if k not in config]
    if not _first(config, "intermediate_size", "moe_intermediate_size"):
        missing.append("intermediate_size")
    if missing:
        raise BadInput(f"The config of {name} lacks {', '.join(missing)}, so thrifty cannot size "
                       "it. It supports decoder-only transformers with Llama-style configs.")
    heads = config["num_attention_heads"]
    shape = ModelShape(
        name=name, layers=config["num_hidden_layers"], hidden=config["hidden_size"], heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        intermediate=_dense_intermediate(config), vocab=config["vocab_size"],
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_context=config.get("max_position_embeddings") or 4096, source=source,
        **_experts(config))
    quant = config.get("quantization_config")
    return _apply_quantization(shape, quant) if quant else shape


# The spellings of mixture-of-experts fields across model families (Mixtral and Llama 4 first)
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_top_k", "num_selected_experts", "top_k")


def _first(config: dict, *keys: str):
    return next((config[k] for k in keys if config.get(k)), None)


def _dense_intermediate(config: dict) -> int:
    if config.get("model_type") == "llama4_text":  # dense layers (if any) use the wider MLP
        return config.get("intermediate_size_mlp") or config["intermediate_size"]
    return _first(config, "intermediate_size", "moe_intermediate_size")


def _experts(config: dict) -> dict:
    """MoE fields of a config; {} for a dense model."""
    experts = _first(config, *EXPERT_COUNT_KEYS)
    if not experts or experts <= 1:
        return {}
    top_k = _first(config, *TOP_K_KEYS)
    if not top_k:
        raise BadInput(f"The config has {experts} experts but no experts-per-token field "
                       f"({', '.join(TOP_K_KEYS)}), so thrifty cannot size its compute.")
    expert_width = _first(config, "moe_intermediate_size", "intermediate_size")
    layers = config["num_hidden_layers"]
    step = _first(config, "interleave_moe_layer_step", "decoder_sparse_step") or 1
    moe_layers = layers // step
    if config.get("first_k_dense_replace"):
        moe_layers = layers - config["first_k_dense_replace"]
    shared = config.get("shared_expert_intermediate_size") or (
        (config.get("n_shared_experts") or 0) * expert_width)
    if config.get("model_type") == "llama4_text":
        shared = expert_width  # Llama 4 adds one shared expert the config does not list
    return {"experts": int(experts), "experts_per_token": int(top_k),
            "expert_intermediate": int(expert_width), "shared_intermediate": int(shared),
            "moe_layers": int(moe_layers)}


def _apply_quantization(shape: ModelShape, quant: dict) -> ModelShape:
    method = quant.get("quant_method", "")
    if method == "compressed-tensors":
        groups = list((quant.get("config_groups") or {}).values())
        if not groups:
            return shape
        weights = groups[0].get("weights") or {}
        acts = groups[0].get("input_activations") or {}
        group = weights.get("group_size") if weights.get("strategy") == "group" else None
        quantized = shape.quantized(int(weights.get("num_bits", 16)), group,
                                    int(acts.get("num_bits", 16)) if acts else 16,
                                    "float" if weights.get("type") == "float" else "int")
        return replace(quantized, attention_quantized=not _ignores_attention(quant))
    if method in ("gptq", "awq"):
        bits = quant.get("bits") or quant.get("w_bit") or 4
        group = quant.get("group_size") or quant.get("q_group_size")
        return shape.quantized(int(bits), int(group) if group and group > 0 else None)
    if method == "fp8":
        return shape.quantized(8, None, 8, "float")
    if method == "bitsandbytes":
        return shape.quantized(4 if quant.get("load_in_4bit") else 8, 64)
    raise BadInput(f"{shape.name} uses quantization {method!r}, which thrifty does not size yet "
                   "(it reads compressed-tensors, gptq, awq, fp8 and bitsandbytes).")


def _ignores_attention(quant: dict) -> bool:
    """Whether the language model's attention projections are left unquantized (listed in the
    ignore list; a vision tower's are not the language model's)."""
    return any("self_attn" in entry and "vision" not in entry
               for entry in quant.get("ignore") or [])


VARIANTS = {"bf16": (16, None, 16), "fp16": (16, None, 16), "w8a8": (8, None, 8),
            "fp8": (8, None, 8), "w8a16": (8, 128, 16), "w4a16": (4, 128, 16)}


def variant(shape: ModelShape, name: str) -> ModelShape:
    """The same model quantized as `name` (a modelled variant, not a measured checkpoint)."""
    if name not in VARIANTS:
        raise BadInput(f"Unknown variant {name!r}; choose from {', '.join(VARIANTS)}.")
    bits, group, act = VARIANTS[name]
    if bits >= 16:
        return replace(shape, weight_bits=16, group_size=None, activation_bits=16,
                       weight_format="int", attention_quantized=True)
    return shape.quantized(bits, group, act, "float" if name == "fp8" else "int")
