"""The quantize manifest, `thrifty-quantize.json` in a checkpoint `thrifty quantize` wrote.

compress writes it (recipe, versions, calibration-data hash, vLLM verification); serve reads it
to refuse merging an adapter into a quantized base, and any part may read it to tell a
thrifty-quantized checkpoint. Version field: `manifest_version`. `SCHEMES` is the one list of
the schemes `thrifty quantize` writes: compress offers them, cost ranks only what they make.
"""

from pathlib import Path

from thrifty.core.files import read_json, write_json

MANIFEST = "thrifty-quantize.json"
MANIFEST_VERSION = 1

# The schemes `thrifty quantize --scheme` writes: name -> (default weight bits, symmetric).
# A name is W<weight bits>A<activation bits>, with a suffix for a variation of it.
SCHEMES = {
    "W4A16": (4, True),
    "W4A16_ASYM": (4, False),
    "W8A16": (8, True),
}


def precisions() -> set[str]:
    """The precisions `thrifty quantize` makes, named as cost names variants ("w4a16")."""
    return {name.split("_")[0].lower() for name in SCHEMES}


def write(folder: Path, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST, {"manifest_version": MANIFEST_VERSION, **manifest})


def is_quantized(folder: str | Path) -> bool:
    """Whether `folder` is a checkpoint written by `thrifty quantize`."""
    return (Path(folder) / MANIFEST).is_file()


def read(folder: str | Path) -> dict:
    return read_json(Path(folder) / MANIFEST)
