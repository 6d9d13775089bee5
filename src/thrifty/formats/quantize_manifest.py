"""The quantize manifest, `thrifty-quantize.json` in a checkpoint `thrifty quantize` wrote.

compress writes it (recipe, versions, calibration-data hash, vLLM verification); serve reads it
to refuse merging an adapter into a quantized base, and any part may read it to tell a
thrifty-quantized checkpoint. Version field: `manifest_version`.
"""

from pathlib import Path

from thrifty.core.files import read_json, write_json

MANIFEST = "thrifty-quantize.json"
MANIFEST_VERSION = 1


def write(folder: Path, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST, {"manifest_version": MANIFEST_VERSION, **manifest})


def is_quantized(folder: str | Path) -> bool:
    """Whether `folder` is a checkpoint written by `thrifty quantize`."""
    return (Path(folder) / MANIFEST).is_file()


def read(folder: str | Path) -> dict:
    return read_json(Path(folder) / MANIFEST)
