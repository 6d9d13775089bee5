"""Engine tasks of assets: converting the built-in GGUF model and extracting the enwiki corpus.

Run as `<compress engine python> -m thrifty.assets.worker <job file>`.
"""

import importlib.util
import time
from pathlib import Path

from thrifty.assets import corpora
from thrifty.assets.models import MANIFEST
from thrifty.core.files import files_sha256, folder_size_bytes, write_json
from thrifty.core.jobs import Events, worker_main


def convert_gguf(params: dict, events: Events) -> dict:
    """Convert a GGUF shipped in a Python package into a safetensors folder at params['out_dir']."""
    from thrifty.libs import hf

    spec = importlib.util.find_spec(params["module"])
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package module {params['module']} is not installed in this engine")
    folder = Path(spec.submodule_search_locations[0])
    gguf = folder / params["gguf_file"]
    out_dir = Path(params["out_dir"])
    started = time.monotonic()
    events.progress("convert GGUF to safetensors", 0, 2, "steps")
    events.status(f"dequantizing {gguf.name}")
    info = hf.convert_gguf(str(folder), params["gguf_file"], out_dir)
    events.progress("convert GGUF to safetensors", 1, 2, "steps")
    events.status("hashing the source")
    manifest = {
        "name": params["name"],
        "source_file": str(gguf),
        "source_sha256": files_sha256([gguf]),
        "weights_bytes": folder_size_bytes(out_dir),
        "convert_s": round(time.monotonic() - started, 1),
        **info,
    }
    write_json(out_dir / MANIFEST, manifest)  # written last: its presence means "complete"
    events.progress("convert GGUF to safetensors", 2, 2, "steps")
    return manifest


def prepare_enwiki(params: dict, events: Events) -> dict:
    events.progress("extract Wikipedia articles", 0, 1, "steps")
    out_dir = Path(params["out_dir"])
    meta = corpora.extract_enwiki(out_dir)
    write_json(out_dir / "meta.json", meta)
    events.progress("extract Wikipedia articles", 1, 1, "steps")
    return meta


TASKS = {"convert_gguf": convert_gguf, "prepare_enwiki": prepare_enwiki}

if __name__ == "__main__":
    worker_main(TASKS)
