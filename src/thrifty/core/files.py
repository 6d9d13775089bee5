"""Writing outputs so that an interrupted job never leaves a half-written result in place."""

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thrifty.core import processes
from thrifty.core.errors import BadInput, ThriftyError


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary file, then rename it over `path` (atomic on POSIX), so that a
    reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def json_object_line(where: str, line: str, expected: str) -> dict:
    """One JSON Lines record, which must be an object; otherwise a BadInput naming `where`
    (the file and line) and saying what a line should be (`expected`)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where} is not valid JSON ({exc.msg} at column {exc.colno}). "
                       f"{expected}") from exc
    if not isinstance(record, dict):
        raise BadInput(f"{where} is a JSON {type(record).__name__}, not an object. {expected}")
    return record


def check_output_free(final: Path, force: bool) -> None:
    """Refuse to overwrite an existing output unless --force was given."""
    if final.exists() and not force:
        raise BadInput(
            f"The output {final} already exists. Pass --force to replace it, "
            "or choose another output path."
        )


@contextmanager
def atomic_folder(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; rename it to `final` only if the block succeeds.

    A failure or Ctrl-C removes the temporary folder and leaves any previous `final` untouched.
    """
    final = Path(final)
    check_output_free(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        full = is_disk_full(exc)
        written = folder_size_bytes(tmp) if full and tmp.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            error = disk_full(final, written, full_path(exc), is_out_of_space(exc))
            raise error from exc
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """An OSError of a full disk, or an engine job that died of one (its message quotes it)."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    return isinstance(exc, ThriftyError) and any(text in str(exc) for text in DISK_FULL_TEXT)


def is_out_of_space(exc: BaseException) -> bool:
    """ENOSPC, not a quota: only then does the free space say which disk it was."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return "No space left on device" in str(exc)


def full_path(exc: BaseException) -> Path | None:
    """The file whose write found the disk full, when the error names it (an OSError's
    filename, or the "No space left on device: 'PATH'" an engine job's message quotes)."""
    if isinstance(exc, OSError) and exc.filename:
        return Path(os.fsdecode(exc.filename))
    quoted = re.search(r"(?:No space left on device|Disk quota exceeded): '([^']+)'", str(exc))
    return Path(quoted.group(1)) if quoted else None


def device_of(path: Path) -> int | None:
    """The filesystem of `path`, or of its nearest existing folder."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            continue
    return None


ROOM_MIB = 64  # a disk with this much free after a "disk full" error is not the full one


def disk_full(final: Path, written: int, where: Path | None = None,
              by_free_space: bool = True) -> BadInput:
    """`written`: the size of the partial output, removed by now (its space is free again).
    An unnamed file is judged by what the output's disk had free when the write failed, but
    not for a quota (by_free_space False), which a disk with room can hit."""
    own_free = shutil.disk_usage(final.parent).free
    if where is not None:
        elsewhere = device_of(where) not in (None, device_of(final.parent))
    else:
        elsewhere = by_free_space and own_free - written > ROOM_MIB * 2**20
    if elsewhere:
        # a cache, a temporary folder or an engine's files on another disk filled up
        full = f"The disk holding {where}" if where is not None else "Another disk"
        return BadInput(
            f"{full} filled up while thrifty made {final.name}; it is not the output's disk "
            f"({final.parent}, {own_free / 2**20:,.1f} MiB free). The partial output was "
            "removed and nothing else was changed: free space where thrifty keeps its "
            "caches and temporary files (THRIFTY_HOME, TMPDIR), or point those to a bigger "
            "disk, and run the command again.")
    return BadInput(
        f"The disk holding {final.parent} filled up while thrifty wrote {final.name}: "
        f"{written / 2**20:,.1f} MiB were written before it ran out, so the output needs more "
        f"than the {own_free / 2**20:,.1f} MiB free now. The partial output was removed and "
        "nothing else was changed: free more space than that (or write the output to a "
        "bigger disk) and run the command again.")


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove what an atomic_folder of `final` left when its process was killed (SIGKILL runs no
    cleanup): `.NAME.partial-PID` and `.NAME.old-PID` whose process no longer exists. A live
    process's are kept: it may be writing them now."""
    removed = []
    for pattern in (f".{final.name}.partial-*", f".{final.name}.old-*"):
        for leftover in Path(final).parent.glob(pattern):
            pid = leftover.name.rsplit("-", 1)[1]
            if pid.isdigit() and not processes.is_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


def folder_size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_bytes(folder: Path) -> int | None:
    """Size of a model folder's weight files; None for something that is not a local folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


def files_sha256(paths: list[Path]) -> str:
    """One SHA-256 over the files' bytes, in the order given (a model's weight shards)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text[-lines:])


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor names -> {"dtype", "shape"} from a .safetensors file, reading only its header.

    The format starts with an 8-byte little-endian header length and a JSON header, so shapes
    are known without torch and without reading the weights.
    """
    with Path(path).open("rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        size = int.from_bytes(size_bytes, "little")
        if size > 100 * 2**20:
            raise ValueError(f"{path} declares a {size}-byte header; not a safetensors file")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header
