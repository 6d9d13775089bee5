"""The quantize manifest, `thrifty-quantize.json` in a checkpoint `thrifty quantize` wrote.

compress writes it (recipe, versions, calibration-data hash, vLLM verification); serve reads it
to refuse merging an adapter into a quantized base, and any part may read it to tell a
thrifty-quantized checkpoint. Version field: `manifest_version`. `SCHEMES` is the one list of
the schemes `thrifty quantize` writes: compress offers them, cost ranks only what they make.
"""

from dataclasses import dataclass
from pathlib import Path

from thrifty.core.files import read_json, write_json

MANIFEST = "thrifty-quantize.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Scheme:
    """What one `thrifty quantize --scheme` name makes (compressed-tensors' preset of that name,
    with thrifty's group size for the grouped ones)."""
    bits: int  # default weight bits
    symmetric: bool
    weight_type: str  # "int", or "float" (FP8 E4M3)
    weight_scales: str  # "group", "channel" (one per output row), "block" (128x128) or "tensor"
    activations: str | None  # None: 16-bit; else how activations are quantized
    summary: str

    @property
    def weight_only(self) -> bool:
        return self.activations is None

    @property
    def static_activations(self) -> bool:
        """Activation scales fixed from calibration data (so even RTN needs data)."""
        return bool(self.activations) and "static" in self.activations


# The schemes `thrifty quantize --scheme` writes. A name is W<weight bits>A<activation bits>,
# or FP8 for 8-bit floating-point weights and activations, with a suffix for a variation.
SCHEMES = {
    "W4A16": Scheme(4, True, "int", "group", None,
                    "4-bit integer weights, symmetric, one scale per group"),
    "W4A16_ASYM": Scheme(4, False, "int", "group", None,
                         "4-bit integer weights with zero points, per group"),
    "W8A16": Scheme(8, True, "int", "group", None, "8-bit integer weights, per group"),
    "W8A8": Scheme(8, True, "int", "channel", "int8 per token, dynamic",
                   "8-bit integer weights per channel and activations per token (INT8 matmuls)"),
    "FP8_DYNAMIC": Scheme(8, True, "float", "channel", "fp8 per token, dynamic",
                          "FP8 weights per channel and activations per token, no calibration"),
    "FP8_BLOCK": Scheme(8, True, "float", "block", "fp8 per group of 128, dynamic",
                        "FP8 weights in 128x128 blocks and activations per group of 128, no "
                        "calibration"),
    "FP8": Scheme(8, True, "float", "tensor", "fp8 per tensor, static",
                  "FP8 weights and activations with one calibrated scale per tensor"),
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
