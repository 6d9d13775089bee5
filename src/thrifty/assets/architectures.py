"""Which model classes the vllm engine serves: asked once per engine build, then cached.

A config.json whose "architectures" names a class vLLM does not have would otherwise quantize
fine and fail only when served; the check runs before any work for every command that hands
the model to vLLM. A class vLLM has no implementation of may still be served by its generic
Transformers backend: that is asked only for such a class. Importing vLLM to ask takes a
dozen seconds, hence the cache beside the engine's marker, keyed by that build.
"""

import difflib
import json
import subprocess
from pathlib import Path

from thrifty.assets.models import ModelRef
from thrifty.core import engines, paths, processes
from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json
from thrifty.core.progress import stderr

ASK = ("import json; from vllm import ModelRegistry; "
       "print(json.dumps(sorted(ModelRegistry.get_supported_archs())))")
# vLLM's fallback for a class it has no implementation of (model_impl "auto"): its generic
# Transformers backend, when the class is in transformers and takes vLLM's attention
# (vllm/model_executor/models/registry.py, _try_resolve_transformers; remote code aside)
ASK_BACKEND = ("import sys, transformers; cls = getattr(transformers, sys.argv[1], None); "
               "print(bool(cls is not None and isinstance(cls, type) and "
               "issubclass(cls, transformers.PreTrainedModel) and "
               "(cls.is_backend_compatible() or cls._can_set_attn_implementation())))")


def cache_path() -> Path:
    return paths.engines_dir() / "vllm-architectures.json"


def _engine_key(info: dict) -> dict:
    return {"python": info["python"], "created_at": info.get("created_at"),
            "versions": info.get("versions", {})}


def _cached(info: dict) -> dict:
    """This engine build's cache ({} when none or another build's)."""
    cache = cache_path()
    if cache.is_file():
        cached = read_json(cache)
        if cached.get("key") == _engine_key(info):
            return cached
    return {}


def _ask_engine(info: dict, script: str, *args: str, status: str) -> str | None:
    try:
        with stderr.status(status):
            done = subprocess.run([info["python"], "-c", script, *args], capture_output=True,
                                  text=True, timeout=600,
                                  **processes.spawn_options(own_group=False))
        return done.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def vllm_architectures() -> set[str] | None:
    """The classes the vllm engine serves; None when the engine is not ready or cannot say (the
    engine's own error then comes where it is used)."""
    info = engines.status("vllm")
    if info["state"] != "ready":
        return None
    cached = _cached(info)
    if "architectures" in cached:
        return set(cached["architectures"])
    answer = _ask_engine(info, ASK, status="asking vLLM which model classes it serves (once per "
                                           "engine build)")
    try:
        names = json.loads(answer or "")
    except json.JSONDecodeError:
        return None
    write_json(cache_path(), {"key": _engine_key(info), "architectures": names})
    return set(names)


def served_by_transformers_backend(name: str) -> bool | None:
    """Whether vLLM serves `name` through its Transformers backend; asked once per class and
    engine build (after vllm_architectures, whose cache this extends). None: cannot say."""
    info = engines.status("vllm")
    cached = _cached(info)
    known = cached.get("transformers_backend", {})
    if name in known:
        return known[name]
    answer = _ask_engine(info, ASK_BACKEND, name,
                         status=f"asking whether vLLM serves {name} through transformers")
    if answer not in ("True", "False"):
        return None
    if cached:
        write_json(cache_path(), {**cached, "transformers_backend": {**known,
                                                                     name: answer == "True"}})
    return answer == "True"


def check_vllm_serves(ref: ModelRef, why: str) -> None:
    """Refuse a local model whose config names only classes vLLM does not serve."""
    if ref.kind != "local":
        return  # built-in models are known to work; a hub model's config is not here
    config_path = Path(ref.path) / "config.json"
    named = json.loads(config_path.read_text()).get("architectures") or []
    known = vllm_architectures()
    if not named or known is None or any(name in known for name in named):
        return  # (no class named: the model files check refuses that first)
    backend = served_by_transformers_backend(named[0])
    if backend is None:
        return  # the engine cannot say: its own error comes where it is used
    if backend:
        stderr.print(f"note: vLLM has no implementation of its own for {named[0]}; it serves "
                     "it through its generic Transformers backend (vLLM warns that its "
                     "performance may not be optimal).",
                     highlight=False)
        return
    close = difflib.get_close_matches(named[0], sorted(known), n=3, cutoff=0.6)
    hint = f" Close names it has: {', '.join(close)}." if close else ""
    version = engines.status("vllm").get("versions", {}).get("vllm", "")
    raise BadInput(
        f"{config_path} names the model class {named[0]!r}, which vLLM {version} does not "
        f"serve, natively ({len(known)} classes, listed in {cache_path()}) or through its "
        f"Transformers backend (transformers has no such class, or not one vLLM can drive)."
        f"{hint} thrifty "
        f"{why}, so it stops here rather than produce something vLLM cannot load. Fix "
        "\"architectures\" if it is wrong, or convert the model to a class vLLM serves.")
