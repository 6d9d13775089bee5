"""Write small, valid safetensors files (zeros) without torch, for adapter and model checks."""

import json
import struct
from pathlib import Path

DTYPE_BYTES = {"F32": 4, "I32": 4, "BF16": 2}

LLAMA = {"hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2, "head_dim": 16,
         "layers": 2}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def llama_projections(spec: dict = LLAMA) -> dict[str, tuple[int, int]]:
    """module suffix -> (output width, input width) for a Llama block."""
    q, kv = spec["heads"] * spec["head_dim"], spec["kv_heads"] * spec["head_dim"]
    h, i = spec["hidden"], spec["intermediate"]
    return {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i)}


def make_base(folder: Path, spec: dict = LLAMA, packed_bits: int | None = None) -> Path:
    """A Llama-shaped model folder (config.json + weights), optionally pack-quantized."""
    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": spec["hidden"], "num_hidden_layers": spec["layers"]}
    tensors = {"model.embed_tokens.weight": ("F32", [100, spec["hidden"]])}
    for layer in range(spec["layers"]):
        for module, (out_width, in_width) in llama_projections(spec).items():
            prefix = f"model.layers.{layer}.{module}"
            if packed_bits:
                tensors[f"{prefix}.weight_packed"] = ("I32", [out_width,
                                                              in_width * packed_bits // 32])
            else:
                tensors[f"{prefix}.weight"] = ("F32", [out_width, in_width])
    if packed_bits:
        config["quantization_config"] = {"config_groups": {
            "group_0": {"weights": {"num_bits": packed_bits}}}}
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "model.safetensors", tensors)
    write_tokenizer_stub(folder)
    return folder


def write_tokenizer_stub(folder: Path) -> None:
    """A tokenizer.json for the folder checks that look for one; nothing in the fast tier
    loads it."""
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": None}))


def make_model_folder(folder: Path, weights: bool = True, **config_fields) -> Path:
    """A model folder that passes thrifty's checks of a local model (config.json, a valid
    empty safetensors file, a tokenizer) without weights: enough for everything refused before
    an engine starts."""
    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **config_fields}
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        write_safetensors(folder / "model.safetensors", {})
    write_tokenizer_stub(folder)
    return folder


def make_adapter(folder: Path, rank: int = 8, spec: dict = LLAMA,
                 modules: tuple[str, ...] = ("self_attn.q_proj", "self_attn.v_proj"),
                 trained_on: str = "some/base", peft_type: str = "LORA",
                 weights: bool = True, **config_fields) -> Path:
    """A PEFT LoRA adapter folder in the layout peft's save_pretrained writes (config_fields
    are added to its adapter_config.json: use_dora=True, bias="all"...)."""
    folder.mkdir(parents=True)
    config = {"peft_type": peft_type, "r": rank, "lora_alpha": 2 * rank,
              "target_modules": [m.split(".")[-1] for m in modules],
              "base_model_name_or_path": trained_on, **config_fields}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        shapes = llama_projections(spec)
        tensors = {}
        for layer in range(spec["layers"]):
            for module in modules:
                out_width, in_width = shapes[module]
                prefix = f"base_model.model.model.layers.{layer}.{module}"
                tensors[f"{prefix}.lora_A.weight"] = ("F32", [rank, in_width])
                tensors[f"{prefix}.lora_B.weight"] = ("F32", [out_width, rank])
        write_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder
