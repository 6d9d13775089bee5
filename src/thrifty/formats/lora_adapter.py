"""LoRA adapters: what one holds, and whether a server may load it over a given base model.

Checks run before `thrifty serve` starts vLLM and again inside the server before every
hot-load, so an adapter vLLM would reject (or, worse, load into the wrong shapes) is turned
away with the reason. Only the standard library is used: shapes come from safetensors headers.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, safetensors_header
from thrifty.formats.safetensors_file import check_safetensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
# The ranks vLLM's --max-lora-rank accepts (vllm/config/lora.py, MaxLoRARanks).
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LORA_TENSOR = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.[^.]+)?\.weight$")


class AdapterRejected(BadInput):
    """An adapter that cannot be served over this base."""


class AdapterNotAllowed(AdapterRejected):
    """An adapter path outside the folders the server's operator allowed."""


@dataclass
class AdapterInfo:
    path: str
    rank: int  # the largest rank among its tensors (rank_pattern can vary it per module)
    alpha: float
    target_modules: list[str]
    trained_on: str | None  # base_model_name_or_path, as recorded by peft
    modules_count: int
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(f"The adapter name {name!r} is not usable as a model name: use letters, "
                       "digits, '.', '_' and '-' (starting with a letter or digit).")
    return name


def vllm_max_rank(rank: int) -> int:
    """The smallest value vLLM accepts for --max-lora-rank that holds `rank`.

    vLLM pads every adapter to this rank, so a larger value than needed costs memory and time.
    """
    for allowed in VLLM_RANKS:
        if allowed >= rank:
            return allowed
    raise AdapterRejected(f"LoRA rank {rank} is above the largest rank vLLM serves "
                          f"({VLLM_RANKS[-1]}).")


def inspect(path: str | Path) -> AdapterInfo:
    """Read an adapter folder's config and tensor shapes; refuse anything that is not a
    safetensors LoRA adapter."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise AdapterRejected(f"The adapter folder {folder} does not exist. Check the path (it "
                              f"is taken relative to {Path.cwd()}).")
    if not folder.is_dir():
        raise AdapterRejected(f"The adapter path {folder} is a file; give the folder that holds "
                              f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise AdapterRejected(f"The adapter folder {folder} has no {CONFIG_FILE}, so it is not a "
                              "PEFT adapter. Point at the folder written by "
                              "PeftModel.save_pretrained().")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterRejected(f"{config_path} is not valid JSON ({exc}).") from exc
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise AdapterRejected(f"The adapter {folder} is of type {peft_type or 'unknown'} "
                              "(peft_type in its config); vLLM serves LoRA adapters only. "
                              "Retrain it as a LoRA adapter, or merge it into the base "
                              "yourself and serve the merged model.")
    _check_plain_lora(folder, config)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [name for name in PICKLE_FILES if (folder / name).is_file()]
        if pickles:
            raise AdapterRejected(
                f"The adapter {folder} has only pickle weights ({', '.join(pickles)}). Loading "
                "pickle files can run arbitrary code, so thrifty refuses them: re-save it with "
                "save_pretrained(dir, safe_serialization=True).")
        raise AdapterRejected(f"The adapter {folder} has {CONFIG_FILE} but no {WEIGHTS_FILE}; "
                              "copy the weights next to the config.")
    try:
        check_safetensors(weights)
    except BadInput as exc:  # the same message, as the adapter error serving paths handle
        raise AdapterRejected(str(exc)) from None
    try:
        header = safetensors_header(weights)
    except (ValueError, OSError) as exc:
        raise AdapterRejected(f"{weights} cannot be read as safetensors ({exc}).") from exc
    shapes = lora_shapes(header)
    if not shapes:
        raise AdapterRejected(f"{weights} holds no LoRA tensors (names ending in "
                              "lora_A.weight / lora_B.weight).")
    ranks = {shape["A"][0] for shape in shapes.values() if "A" in shape}
    return AdapterInfo(
        path=str(folder.resolve()), rank=max(ranks), alpha=config.get("lora_alpha", 0),
        target_modules=sorted(config.get("target_modules") or []),
        trained_on=config.get("base_model_name_or_path"), modules_count=len(shapes),
        size_bytes=weights.stat().st_size)


def _check_plain_lora(folder: Path, config: dict) -> None:
    """vLLM serves plain LoRA: no DoRA magnitudes, no trained biases, no fully trained extra
    modules; thrifty merges the same kind, so that what it merges it could also serve."""
    if config.get("use_dora"):
        raise AdapterRejected(f"The adapter {folder} is a DoRA adapter (use_dora in its config); "
                              "vLLM serves plain LoRA adapters only, and thrifty handles those. "
                              "Merge it with peft's merge_and_unload() yourself, then quantize "
                              "the merged model.")
    if config.get("bias", "none") != "none":
        raise AdapterRejected(f"The adapter {folder} trains biases (bias={config['bias']!r} in "
                              "its config); vLLM serves LoRA adapters without trained biases. "
                              "Retrain it with bias='none'.")
    if config.get("modules_to_save"):
        raise AdapterRejected(f"The adapter {folder} also saves fully trained modules "
                              f"({', '.join(config['modules_to_save'])}); vLLM serves only the "
                              "low-rank updates. Retrain it without modules_to_save.")


def lora_shapes(header: dict[str, dict]) -> dict[str, dict[str, list[int]]]:
    """module path -> {"A": shape of lora_A, "B": shape of lora_B}."""
    modules: dict[str, dict[str, list[int]]] = {}
    for tensor, spec in header.items():
        match = LORA_TENSOR.match(tensor)
        if match:
            module, kind = match.groups()
            modules.setdefault(module, {})[kind[-1]] = spec["shape"]
    return modules


def base_linear_shapes(base_dir: str | Path) -> dict[str, tuple[int, int]]:
    """module path -> (output width, input width) for every 2-D weight of a local model.

    Works for plain checkpoints and for compressed-tensors pack-quantized ones (whose int32
    `weight_packed` tensors hold 32 / bits weights per element).
    """
    folder = Path(base_dir)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    per_int32 = 32 // _packed_bits(config)
    shapes: dict[str, tuple[int, int]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for tensor, spec in safetensors_header(file).items():
            shape = spec["shape"]
            if len(shape) != 2:
                continue
            if tensor.endswith(".weight"):
                shapes[tensor[: -len(".weight")]] = (shape[0], shape[1])
            elif tensor.endswith(".weight_packed"):
                shapes[tensor[: -len(".weight_packed")]] = (shape[0], shape[1] * per_int32)
    return shapes


def _packed_bits(config: dict) -> int:
    groups = (config.get("quantization_config") or {}).get("config_groups") or {}
    for group in groups.values():
        bits = (group.get("weights") or {}).get("num_bits")
        if bits:
            return int(bits)
    return 32


def check_fits_base(info: AdapterInfo, base_dir: str | Path, base_label: str) -> None:
    """Every module the adapter changes must exist in the base with the widths it expects."""
    shapes = lora_shapes(safetensors_header(Path(info.path) / WEIGHTS_FILE))
    base = base_linear_shapes(base_dir)
    if not base:
        return  # a base without local safetensors (a hub id): vLLM checks on load
    trained_on = f" It was trained on {info.trained_on!r}." if info.trained_on else ""
    missing = sorted(m for m in shapes if m not in base)
    if missing:
        raise AdapterRejected(
            f"The adapter {info.path} does not fit the base model {base_label}: it changes "
            f"{len(missing)} module(s) the base does not have, e.g. {missing[0]}.{trained_on} "
            "Serve it over the model it was trained for, or train it for this base.")
    for module, parts in sorted(shapes.items()):
        out_width, in_width = base[module]
        a_in = parts.get("A", [0, in_width])[1]
        b_out = parts.get("B", [out_width, 0])[0]
        if (a_in, b_out) != (in_width, out_width):
            raise AdapterRejected(
                f"The adapter {info.path} does not fit the base model {base_label}: for "
                f"{module} it expects input width {a_in} and output width {b_out}, the base "
                f"layer has {in_width} and {out_width}.{trained_on} Serve it over the model it "
                "was trained for, or train it for this base.")


def check_allowed(path: str | Path, allowed_dirs: list[str], exact: tuple[str, ...] = ()) -> None:
    """Adapters load only from inside a folder the server's operator allowed (or from a path
    the operator named when starting the server)."""
    resolved = Path(path).expanduser().resolve()
    if str(resolved) in {str(Path(p).resolve()) for p in exact}:
        return
    for folder in allowed_dirs:
        root = Path(folder).resolve()
        if resolved == root or root in resolved.parents:
            return
    if not allowed_dirs:
        raise AdapterNotAllowed(
            f"This server loads no adapters at run time from local paths such as {resolved}: "
            "it was started without --adapters-dir or --allow-adapters-from. Restart "
            "`thrifty serve` with --allow-adapters-from set to the folder that holds it.")
    raise AdapterNotAllowed(
        f"The adapter path {resolved} is outside the folders this server loads adapters from "
        f"({', '.join(allowed_dirs)}). Copy the adapter into one of them, or restart "
        "`thrifty serve` with --allow-adapters-from for its folder.")


def check_rank(info: AdapterInfo, max_rank: int) -> None:
    if info.rank > max_rank:
        raise AdapterRejected(
            f"The adapter {info.path} has LoRA rank {info.rank}, above this server's limit of "
            f"{max_rank} (--max-lora-rank, derived from the adapters it started with). Restart "
            f"`thrifty serve` with --max-lora-rank {vllm_max_rank(info.rank)} or more.")


def validate(path: str | Path, base_dir: str | Path, base_label: str,
             max_rank: int | None = None, allowed_dirs: list[str] | None = None,
             exact: tuple[str, ...] = ()) -> AdapterInfo:
    """All checks, cheapest first; returns what the adapter holds. allowed_dirs=None skips
    the folder check (the operator's own choice at start-up)."""
    if allowed_dirs is not None:
        check_allowed(path, allowed_dirs, exact)
    info = inspect(path)
    if max_rank is not None:
        check_rank(info, max_rank)
    check_fits_base(info, base_dir, base_label)
    return info


def scan_folder(folder: str | Path) -> dict[str, Path]:
    """Adapters in a resolver folder: sub-folders holding an adapter_config.json, by name."""
    root = Path(folder)
    return {child.name: child for child in sorted(root.iterdir())
            if child.is_dir() and (child / CONFIG_FILE).is_file() and NAME.match(child.name)}
