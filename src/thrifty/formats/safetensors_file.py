"""A safetensors file checked against its own header, reading only the header: the format
starts with an 8-byte little-endian header length and a JSON header whose tensors' byte
ranges must cover the rest of the file exactly. A truncated file (an interrupted download or
copy) fails here with its name, not minutes later inside an engine."""

import json
from pathlib import Path

from thrifty.core.errors import BadInput

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
COPY_AGAIN = ("Copy or download the file again and compare its size with the source's; an "
              "interrupted download or a full disk leaves files like this.")


def check_safetensors(path: Path) -> None:
    """The header parses and its tensors' byte ranges cover the rest of the file exactly."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BadInput(f"The weight file {path} is {size} bytes long, too short for a "
                           f"safetensors file (8 bytes of header length come first). {COPY_AGAIN}")
        header_bytes = int.from_bytes(prefix, "little")
        if header_bytes > min(MAX_HEADER_BYTES, size - 8):
            raise BadInput(f"The weight file {path} declares a {header_bytes:,}-byte header but "
                           f"holds {size:,} bytes in all: it is truncated or not a safetensors "
                           f"file. {COPY_AGAIN}")
        try:
            header = json.loads(handle.read(header_bytes))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"The header of the weight file {path} is not valid JSON ({exc}): the "
                           f"file is damaged. {COPY_AGAIN}") from exc
    data_end = _data_end(path, header)
    available = size - 8 - header_bytes
    if data_end > available:
        raise BadInput(f"The weight file {path} is truncated: its header places tensors up to "
                       f"byte {data_end:,} of the data, but the file holds {available:,} "
                       f"({data_end - available:,} bytes missing). {COPY_AGAIN}")
    if data_end < available:
        raise BadInput(f"The weight file {path} has {available - data_end:,} bytes after its "
                       "last tensor that its header does not describe; safetensors readers "
                       f"refuse such a file. {COPY_AGAIN}")


def _data_end(path: Path, header: object) -> int:
    """The end of the last tensor's byte range, after checking every range is well formed."""
    if not isinstance(header, dict):
        raise BadInput(f"The header of the weight file {path} is not a JSON object: the file is "
                       f"damaged. {COPY_AGAIN}")
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise BadInput(f"The tensor {name!r} in {path} has no valid \"data_offsets\" in the "
                           f"header: the file is damaged. {COPY_AGAIN}")
        end = max(end, offsets[1])
    return end
