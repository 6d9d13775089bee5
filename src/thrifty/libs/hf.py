"""All of thrifty's transformers calls, in one place (runs inside the compress engine)."""

from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from thrifty.core import token_prefix


def load_tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def prefix_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a request's text (its BOS where it adds one)."""
    return token_prefix.prefix_ids(
        tokenizer(token_prefix.PROBE_TEXT, add_special_tokens=True)["input_ids"],
        tokenizer(token_prefix.PROBE_TEXT, add_special_tokens=False)["input_ids"])


def load_causal_lm(path: str, dtype: str = "float32", dense: bool = False):
    """dtype is a torch dtype name, or "auto" for the one in the model's config. `dense`: a
    compressed-tensors checkpoint is decompressed into plain Linear layers holding the
    quantized values (peft cannot wrap transformers' CompressedLinear, which has no
    `weight`); the numbers are the same."""
    extra = {}
    if dense and is_compressed_tensors(path):
        from transformers import CompressedTensorsConfig

        extra["quantization_config"] = CompressedTensorsConfig(run_compressed=False)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype="auto" if dtype == "auto" else getattr(torch, dtype), **extra)
    model.eval()
    return model


def is_compressed_tensors(path: str) -> bool:
    quantization = getattr(AutoConfig.from_pretrained(path), "quantization_config", None) or {}
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return quantization.get("quant_method") == "compressed-tensors"


def chat_renderer(tokenizer):
    """A function that renders chat `messages` to text with the model's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False)


def convert_gguf(folder: str, gguf_file: str, out_dir: Path) -> dict:
    """Dequantize a GGUF checkpoint into a plain fp32 safetensors folder.

    transformers refuses save_pretrained() on a model loaded from GGUF, so the weights are
    copied into a model built from the same config (minus its quantization_config).
    """
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file,
                                                  dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # A tied lm_head is not in the state dict; anything else missing means a broken conversion.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "architecture": config.architectures[0] if config.architectures else config.model_type,
        "parameters_params": sum(p.numel() for p in plain.parameters()),
        "layers_count": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "transformers_version": transformers.__version__,
    }


def load_config(path: str):
    return AutoConfig.from_pretrained(path)


def meta_model(path: str):
    """The model's module tree with no weights in memory (for planning before a long job)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))


def linear_layers(model) -> list[tuple[str, int, int]]:
    """(name, input width, output width) of every nn.Linear in the model."""
    return [(name, m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)]


def save_tokenizer(tokenizer, out_dir: str) -> None:
    tokenizer.save_pretrained(out_dir)


def library_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def tokenizer_mismatch(first_path: str, second_path: str) -> str | None:
    """Why two models cannot share token ids (None when they can): distillation and the KL
    divergence of `eval` compare distributions token by token, so the vocabularies must be the
    same, id for id."""
    first_size = AutoConfig.from_pretrained(first_path).vocab_size
    second_size = AutoConfig.from_pretrained(second_path).vocab_size
    if first_size != second_size:
        return f"the vocabularies differ ({first_size} and {second_size} entries)"
    first = AutoTokenizer.from_pretrained(first_path).get_vocab()
    second = AutoTokenizer.from_pretrained(second_path).get_vocab()
    differing = sum(1 for token, index in first.items() if second.get(token) != index)
    differing += sum(1 for token in second if token not in first)
    if differing:
        return (f"their tokenizers differ ({len(first)} and {len(second)} tokens, "
                f"{differing} of them mapped differently)")
    return None


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of decoder blocks of a Llama-style model (model.model.layers)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no model.layers stack of decoder blocks")
    return layers


@torch.inference_mode()
def block_importance(model, sequences: torch.Tensor) -> list[float]:
    """Block influence of each decoder layer (ShortGPT): 1 - mean cosine similarity between the
    hidden states that enter and leave it. A block that barely changes its input matters least."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    counts = [0] * len(layers)

    def hook(index):
        def record(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(),
                                                           dim=-1)
            sums[index] += (1 - cosine).sum().item()
            counts[index] += cosine.numel()
        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        model(sequences)
    finally:
        for handle in handles:
            handle.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


def save_depth_pruned(model, tokenizer, keep: list[int], out_dir: str) -> int:
    """Save a copy of `model` with only the decoder layers in `keep` (in order), renumbered;
    embeddings, final norm and head are kept as they are. Returns the parameter count."""
    config = AutoConfig.for_model(**{**model.config.to_dict(), "num_hidden_layers": len(keep)})
    if getattr(model.config, "layer_types", None):
        config.layer_types = [model.config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    renumber = {old: new for new, old in enumerate(keep)}
    state = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if len(parts) > 3 and parts[:2] == ["model", "layers"]:
            old = int(parts[2])
            if old not in renumber:
                continue
            name = ".".join(["model", "layers", str(renumber[old]), *parts[3:]])
        state[name] = tensor
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"depth pruning mismatch: missing {missing}, unexpected {unexpected}")
    student.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in student.parameters())
