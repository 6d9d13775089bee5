"""The on-disk teacher signal of offline distillation: token sequences and the teacher's top-k
next-token log-probabilities for every position, written in shards so that a capture resumes.

<signal>/
  manifest.json          format, teacher, top_k, shapes, and the shards finished so far
  tokens.npy             int32 [sequences, seq_len]: the packed training sequences
  shard-00003.ids.npy    [n, seq_len - 1, top_k] token ids (uint16 when the vocab fits, else int32)
  shard-00003.logprobs.npy  float16 [n, seq_len - 1, top_k], log-probabilities over the full vocab

Row t of a sequence holds the teacher's distribution for the token after position t, so it is
the target of the student's logits at position t. A shard counts only once the manifest lists
it; the manifest is replaced atomically after the shard's files are complete, so a crash or a
full disk leaves the finished shards and nothing half-written that a reader would trust.

Imported inside the engines; numpy is imported where it is used (the CLI does not have it).
"""

import os
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json

FORMAT = "thrifty.teacher-topk"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens.npy"


def manifest_path(folder: Path) -> Path:
    return Path(folder) / MANIFEST


def read_manifest(folder: Path) -> dict | None:
    path = manifest_path(folder)
    if not path.is_file():
        return None
    manifest = read_json(path)
    if manifest.get("format") != FORMAT:
        raise BadInput(f"{folder} is not a thrifty teacher signal (its manifest has format "
                       f"{manifest.get('format')!r}).")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json(manifest_path(folder), manifest)


def new_manifest(teacher: dict, top_k: int, seq_len: int, sequences: int, shard_size: int,
                 vocab_size: int, data: dict) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "teacher": teacher,
        "top_k": top_k, "seq_len": seq_len, "sequences": sequences, "shard_size": shard_size,
        "vocab_size": vocab_size, "id_dtype": "uint16" if vocab_size <= 65536 else "int32",
        "data": data, "shards": {},
    }


def shard_ranges(manifest: dict) -> list[tuple[int, int, int]]:
    """(shard number, first sequence, end sequence) of every shard."""
    size, total = manifest["shard_size"], manifest["sequences"]
    return [(n, start, min(start + size, total))
            for n, start in enumerate(range(0, total, size))]


def pending_shards(manifest: dict) -> list[tuple[int, int, int]]:
    return [r for r in shard_ranges(manifest) if f"{r[0]:05d}" not in manifest["shards"]]


def is_complete(manifest: dict) -> bool:
    return not pending_shards(manifest)


def shard_files(folder: Path, number: int) -> tuple[Path, Path]:
    base = Path(folder) / f"shard-{number:05d}"
    return base.with_name(base.name + ".ids.npy"), base.with_name(base.name + ".logprobs.npy")


def _save_npy(path: Path, array) -> int:
    """Write an .npy file under a temporary name and rename it: never a half-written file."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size


def save_tokens(folder: Path, tokens) -> None:
    import numpy as np

    Path(folder).mkdir(parents=True, exist_ok=True)
    _save_npy(Path(folder) / TOKENS, np.asarray(tokens, dtype=np.int32))


def load_tokens(folder: Path):
    import numpy as np

    return np.load(Path(folder) / TOKENS, mmap_mode="r")


def save_shard(folder: Path, manifest: dict, number: int, ids, logprobs) -> None:
    """Write one shard's arrays, then record it in the manifest (the commit point)."""
    import numpy as np

    ids_path, logprobs_path = shard_files(folder, number)
    try:
        size = _save_npy(ids_path, np.asarray(ids, dtype=manifest["id_dtype"]))
        size += _save_npy(logprobs_path, np.asarray(logprobs, dtype=np.float16))
        shards = {**manifest["shards"], f"{number:05d}": {"sequences": len(ids), "bytes": size}}
        write_manifest(folder, {**manifest, "shards": shards})
    except OSError:
        # A shard the manifest does not list is never read; drop its files to free the space.
        ids_path.unlink(missing_ok=True)
        logprobs_path.unlink(missing_ok=True)
        raise
    manifest["shards"] = shards


def signal_bytes(manifest: dict) -> int:
    return sum(shard["bytes"] for shard in manifest["shards"].values())


def bytes_per_token(manifest: dict) -> float:
    """Stored bytes per scored position (the teacher-signal cost DistillKit reports)."""
    positions = sum(s["sequences"] for s in manifest["shards"].values()) * (manifest["seq_len"] - 1)
    return signal_bytes(manifest) / positions if positions else 0.0


class SignalReader:
    """Random access to (token ids, teacher top-k ids, teacher log-probs) of each sequence."""

    def __init__(self, folder: Path):
        import numpy as np

        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        if manifest is None or not is_complete(manifest):
            raise BadInput(f"The teacher signal in {folder} is incomplete; finish its capture "
                           "first (rerun the same command with --resume).")
        self.manifest = manifest
        self.tokens = load_tokens(self.folder)
        self._shards = {}
        for number, start, _end in shard_ranges(manifest):
            ids_path, logprobs_path = shard_files(self.folder, number)
            self._shards[number] = (start, np.load(ids_path, mmap_mode="r"),
                                    np.load(logprobs_path, mmap_mode="r"))

    def __len__(self) -> int:
        return self.manifest["sequences"]

    def get(self, index: int):
        start, ids, logprobs = self._shards[index // self.manifest["shard_size"]]
        row = index - start
        return self.tokens[index], ids[row], logprobs[row]
