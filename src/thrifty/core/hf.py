"""All of thrifty's transformers calls, in one place (runs inside the compress engine)."""

from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def load_tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def load_causal_lm(path: str, dtype: str = "float32"):
    """dtype is a torch dtype name, or "auto" for the one in the model's config."""
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    model.eval()
    return model


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
