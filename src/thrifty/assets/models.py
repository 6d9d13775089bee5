"""Model references: built-in offline models, local folders, and hub ids.

A user names a model three ways: a built-in name (`smollm2-135m`, prepared once into the
thrifty cache), a local Hugging Face folder (validated before any long job starts), or a hub id
(`org/name`, passed through to the engines, which download it where a hub is reachable).
"""

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from thrifty.assets import model_files
from thrifty.core import paths
from thrifty.core.errors import BadInput, HubUnreachable

MANIFEST = "thrifty-model.json"  # written into a prepared built-in model's folder, last
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "builtin", "local" or "hub"
    name: str  # what the user wrote
    path: str  # a local folder, or the hub id


def builtin_models() -> dict[str, dict]:
    return json.loads((resources.files("thrifty") / "data" / "models.json").read_text())


def prepared_dir(name: str) -> Path:
    return paths.models_dir() / name


def is_prepared(name: str) -> bool:
    return (prepared_dir(name) / MANIFEST).is_file()


def resolve(ref: str, allow_pickle: bool = False) -> ModelRef:
    """Turn what the user typed into a ModelRef, or say clearly why it cannot be used.

    A built-in model is returned whether or not it is prepared yet (callers prepare it).
    """
    if ref in builtin_models():
        return ModelRef("builtin", ref, str(prepared_dir(ref)))
    path = Path(ref).expanduser()
    if path.exists():
        validate_folder(path, allow_pickle)
        return ModelRef("local", ref, str(path.resolve()))
    if looks_like_hub_id(ref):
        check_hub_reachable(ref)
        return ModelRef("hub", ref, ref)
    raise BadInput(
        f"The model {ref!r} is not a built-in model ({', '.join(builtin_models())}), "
        f"not an existing folder, and not a hub id of the form org/name. Check the path "
        f"(it is taken relative to {Path.cwd()}), or run `thrifty models list`."
    )


def looks_like_hub_id(ref: str) -> bool:
    """org/name that is neither a built-in model nor an existing path."""
    return (ref not in builtin_models() and not Path(ref).expanduser().exists()
            and bool(HUB_ID.match(ref)) and not ref.startswith("."))


def validate_folder(path: Path, allow_pickle: bool = False) -> None:
    """A model folder needs a usable config.json, complete safetensors weights (pickle weights
    are refused) and its tokenizer."""
    _check_weight_files(path, allow_pickle)
    model_files.check_config(path)
    model_files.check_weights(path)
    model_files.check_tokenizer(path)


def _check_weight_files(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir():
        raise BadInput(f"The model path {path} is a file; give the folder that holds config.json "
                       "and the weights.")
    config = path / "config.json"
    if not config.is_file():
        raise BadInput(f"The model folder {path} has no config.json, so it is not a Hugging Face "
                       "model folder. Point at the folder written by save_pretrained().")
    files = [p.name for p in path.iterdir()]
    if any(n.endswith(".safetensors") for n in files):
        return
    pickles = [n for n in files if n.endswith(PICKLE_SUFFIXES)]
    if pickles and allow_pickle:
        return
    if pickles:
        raise BadInput(
            f"The model folder {path} has only pickle weights ({', '.join(sorted(pickles))}). "
            "Loading pickle files can run arbitrary code, so thrifty refuses them: convert the "
            "model to safetensors (model.save_pretrained(dir, safe_serialization=True)), or pass "
            "--allow-pickle if you trust where it came from."
        )
    raise BadInput(f"The model folder {path} has config.json but no weights (*.safetensors). "
                   "Copy the weight files next to config.json.")


def check_hub_reachable(model_id: str, timeout_s: float = 3.0) -> None:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    reason = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            urllib.request.urlopen(f"{endpoint}/api/models/{model_id}", timeout=timeout_s)
            return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404):
                raise BadInput(f"The hub at {endpoint} has no model {model_id!r} you can access "
                               f"(HTTP {exc.code}). Check the id and your token.") from exc
            return
        except (urllib.error.URLError, OSError) as exc:
            reason = f"{endpoint} cannot be reached ({getattr(exc, 'reason', exc)})"
    raise HubUnreachable(
        f"{model_id!r} looks like a hub id, but no model hub is reachable: {reason}. Download "
        f"the model on a machine with hub access, copy the folder here and pass its path, or "
        f"use the built-in offline model {DEFAULT_MODEL!r}."
    )
