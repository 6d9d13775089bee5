"""The files of a local model folder, checked before any job starts: config.json, the
safetensors weights (headers against file sizes, index against shards) and the tokenizer.

A damaged folder would otherwise fail minutes later inside an engine with a traceback that
reads like a thrifty bug. Standard library only, and only headers are read: a few kilobytes
per file, whatever the model's size.
"""

import json
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.formats.safetensors_file import check_safetensors

INDEX = "model.safetensors.index.json"
# tokenizer.json (fast tokenizers), *.model (SentencePiece: tokenizer.model, spiece.model),
# vocab files, tiktoken files, Mistral's tekken.json
TOKENIZER_FILES = ("tokenizer.json", "*.model", "vocab.json", "vocab.txt", "*.tiktoken",
                   "tekken.json")


def check_config(folder: Path) -> dict:
    """config.json must be a JSON object naming the model's type and architecture."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{config_path} is not valid JSON ({exc}); the folder looks damaged. "
                       "Save the model again with save_pretrained().") from exc
    if not isinstance(config, dict):
        raise BadInput(f"{config_path} holds a JSON {type(config).__name__}, not an object; it "
                       "is not a model configuration. Save the model again with "
                       "save_pretrained().")
    architectures = config.get("architectures")
    if not (isinstance(architectures, list) and architectures
            and all(isinstance(a, str) for a in architectures)):
        raise BadInput(f"{config_path} names no model class in \"architectures\" (e.g. "
                       "[\"LlamaForCausalLM\"]), so no engine can tell how to load the weights. "
                       "Save the model with save_pretrained() of its model class, or add the "
                       "field by hand if you know the class.")
    if not isinstance(config.get("model_type"), str):
        raise BadInput(f"{config_path} has no \"model_type\" (e.g. \"llama\"), which "
                       "transformers and vLLM read to pick the configuration class. Save the "
                       "model again with save_pretrained().")
    return config


def check_tokenizer(folder: Path) -> None:
    if not any(path.is_file() for name in TOKENIZER_FILES for path in folder.glob(name)):
        raise BadInput(f"The model folder {folder} has no tokenizer files (one of "
                       f"{', '.join(TOKENIZER_FILES)}); thrifty and vLLM read the tokenizer "
                       "from the model folder. Save it there with "
                       "AutoTokenizer.from_pretrained(...).save_pretrained(folder).")


def check_weights(folder: Path) -> None:
    """Every safetensors file readable and complete; an index names only files that exist."""
    index = folder / INDEX
    if index.is_file():
        check_index(index)
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path)


def check_index(index: Path) -> None:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = set(weight_map.values())
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"{index} is not a safetensors index (JSON with a \"weight_map\" of "
                       f"tensor names to shard files): {exc!r}. Save the model again with "
                       "save_pretrained().") from exc
    missing = sorted(name for name in shards if not (index.parent / str(name)).is_file())
    if missing:
        raise BadInput(f"{index} names {len(missing)} weight file(s) that are not in the folder: "
                       f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Copy the "
                       "missing shards next to the index (a partial download or copy leaves "
                       "them out).")
