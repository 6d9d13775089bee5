"""Weight-only quantization schemes thrifty offers: name -> (default bits, symmetric).

Shared by the CLI (option choices) and the compress engine (scheme construction).
"""

SCHEMES = {
    "W4A16": (4, True),
    "W4A16_ASYM": (4, False),
    "W8A16": (8, True),
}
