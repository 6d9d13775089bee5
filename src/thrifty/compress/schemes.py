"""Weight-only quantization schemes thrifty offers: name -> (default bits, symmetric).

The table is in formats/quantize_manifest.py, the one place that lists what `thrifty quantize`
makes: `thrifty cost` reads it there (features do not import each other) to rank only variants
thrifty can produce.
"""

from thrifty.formats.quantize_manifest import SCHEMES

__all__ = ["SCHEMES"]
