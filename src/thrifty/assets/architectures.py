"""Which model classes the vllm engine serves: asked once per engine build, then cached.

A config.json whose "architectures" names a class vLLM does not have would otherwise quantize
fine and fail only when served; the check runs before any work for every command that hands
the model to vLLM. Importing vLLM to ask takes a dozen seconds, hence the cache beside the
engine's marker, keyed by that build.
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


def cache_path() -> Path:
    return paths.engines_dir() / "vllm-architectures.json"


def vllm_architectures() -> set[str] | None:
    """The classes the vllm engine serves; None when the engine is not ready or cannot say (the
    engine's own error then comes where it is used)."""
    info = engines.status("vllm")
    if info["state"] != "ready":
        return None
    key = {"python": info["python"], "created_at": info.get("created_at"),
           "versions": info.get("versions", {})}
    cache = cache_path()
    if cache.is_file():
        cached = read_json(cache)
        if cached.get("key") == key:
            return set(cached["architectures"])
    try:
        with stderr.status("asking vLLM which model classes it serves (once per engine build)"):
            done = subprocess.run([info["python"], "-c", ASK], capture_output=True, text=True,
                                  timeout=600, **processes.spawn_options(own_group=False))
        names = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return None
    write_json(cache, {"key": key, "architectures": names})
    return set(names)


def check_vllm_serves(ref: ModelRef, why: str) -> None:
    """Refuse a local model whose config names only classes vLLM does not serve."""
    if ref.kind != "local":
        return  # built-in models are known to work; a hub model's config is not here
    config_path = Path(ref.path) / "config.json"
    named = json.loads(config_path.read_text()).get("architectures") or []
    known = vllm_architectures()
    if known is None or any(name in known for name in named):
        return
    close = difflib.get_close_matches(named[0], sorted(known), n=3, cutoff=0.6)
    hint = f" Close names it has: {', '.join(close)}." if close else ""
    version = engines.status("vllm").get("versions", {}).get("vllm", "")
    raise BadInput(
        f"{config_path} names the model class {named[0]!r}, which vLLM {version} does not "
        f"serve ({len(known)} classes it does are listed in {cache_path()}).{hint} thrifty "
        f"{why}, so it stops here rather than produce something vLLM cannot load. Fix "
        "\"architectures\" if it is wrong, or convert the model to a class vLLM serves.")
