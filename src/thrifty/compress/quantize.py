"""Weight-only quantization with llm-compressor (runs inside the compress engine).

Order of work: plan and check everything that can be checked without weights (architecture,
group size, memory and disk), then build the calibration set, then calibrate and save.
"""

import hashlib
import random
import re
import shutil
import time
from pathlib import Path

from thrifty.assets import corpora
from thrifty.core import hardware
from thrifty.core.errors import BadInput
from thrifty.core.jobs import Events
from thrifty.core.token_prefix import without_prefix
from thrifty.formats.quantize_manifest import SCHEMES

IGNORED_LAYERS = ["lm_head"]  # kept in full precision, as every published W4A16 recipe does
AUTO_GROUP_SIZES = (128, 64, 32)
GPTQ_METHODS = ("gptq", "awq-gptq")  # the methods that run GPTQ (and take its options)
BLOCK = 128  # compressed-tensors' FP8_BLOCK preset: 128x128 weight blocks


def plan(model_path: str, method: str, scheme: str, bits: int, group_size: str | int,
         num_samples: int, seq_len: int, out_parent: str, ignore: tuple = ()) -> dict:
    """Everything decided and checked before calibration; raises BadInput on what won't work."""
    from thrifty.libs import hf, llmc

    model = hf.meta_model(model_path)
    config = model.config
    architecture = (config.architectures or [type(model).__name__])[0]
    if method in ("awq", "awq-gptq") and architecture not in llmc.awq_architectures():
        raise BadInput(
            f"AWQ needs to know which layers smooth which in {architecture}, and llm-compressor "
            f"{llmc.version()} has no such mappings for it. AWQ supports: "
            f"{', '.join(llmc.awq_architectures())}. Use --method gptq or rtn for this model."
        )
    layers = layers_to_quantize(hf.linear_layers(model), ignore)
    if SCHEMES[scheme].weight_scales == "group":
        chosen, note = choose_group_size(layers, group_size)
    elif SCHEMES[scheme].weight_scales == "block":
        check_block_shapes(layers, scheme)
        chosen, note = None, f"one weight scale per {BLOCK}x{BLOCK} block"
    else:
        chosen, note = None, f"one weight scale per {SCHEMES[scheme].weight_scales}"
    params_total = sum(p.numel() for p in model.parameters())
    quantized_params = sum(i * o for _, i, o in layers)
    bytes_per_weight = model.dtype.itemsize if hasattr(model.dtype, "itemsize") else 4
    estimate = {
        "weights_in_memory_bytes": params_total * bytes_per_weight,
        # sequential calibration caches every sample's hidden states between layers (x2: in+out)
        "activations_bytes": 2 * num_samples * seq_len * config.hidden_size * 4,
        "output_bytes": int(quantized_params * bits / 8 * (1 + 32 / (bits * (chosen or 4096)))
                            + (params_total - quantized_params) * bytes_per_weight),
    }
    estimate["memory_bytes"] = int(1.2 * (estimate["weights_in_memory_bytes"]
                                          + estimate["activations_bytes"]))
    _check_resources(estimate, out_parent)
    return {"architecture": architecture, "group_size": chosen, "group_size_note": note,
            "layers_count": len(layers), "decoder_layers_count": config.num_hidden_layers,
            "parameters_params": params_total, "quantized_params": quantized_params,
            "estimate": estimate}


def _ignore_regex(name: str) -> str:
    """One --ignore entry as a regex on a module's full name: `re:` passes a regex through as
    llm-compressor takes it; a plain name matches the name's last part(s) (`down_proj`,
    `layers.11.mlp.down_proj`)."""
    return name.removeprefix("re:") if name.startswith("re:") else f"(.*\\.)?{re.escape(name)}$"


def ignore_patterns(ignore: tuple | list = ()) -> list[str]:
    """llm-compressor `ignore` entries: lm_head always, then each --ignore entry."""
    return [*IGNORED_LAYERS, *(f"re:{_ignore_regex(name)}" for name in ignore)]


def layers_to_quantize(layers: list[tuple[str, int, int]], ignore: tuple | list = ()):
    """The linear layers left once lm_head and the --ignore entries are taken out (matched as
    llm-compressor does: re.match on the full name); BadInput if an entry matches none."""
    regexes = []
    for name in ignore:
        try:
            regexes.append(re.compile(_ignore_regex(name)))
        except re.error as error:
            raise BadInput(f"--ignore {name} is not a valid regular expression ({error}).") \
                from None
        if not any(regexes[-1].match(n) for n, _, _ in layers):
            examples = ", ".join(n for n, _, _ in layers[:3])
            raise BadInput(f"--ignore {name} matches no linear layer of this model. Give the "
                           f"end of a layer's name (its linear layers are named like "
                           f"{examples}) or a regex after 're:'.")
    kept = [(n, i, o) for n, i, o in layers if n.split(".")[-1] not in IGNORED_LAYERS
            and not any(regex.match(n) for regex in regexes)]
    if not kept:
        raise BadInput("--ignore leaves no linear layer to quantize; name fewer layers.")
    return kept


def choose_group_size(layers: list[tuple[str, int, int]], requested: str | int) -> tuple[int, str]:
    """The requested group size if every layer's input width divides by it; with 'auto', the
    largest of 128, 64, 32 that does."""
    widths = sorted({i for _, i, _ in layers})
    if requested == "auto":
        for size in AUTO_GROUP_SIZES:
            if all(w % size == 0 for w in widths):
                skipped = [s for s in AUTO_GROUP_SIZES if s > size]
                why = (f" ({', '.join(map(str, skipped))} does not divide input widths "
                       f"{', '.join(map(str, widths))})") if skipped else ""
                return size, f"group size {size} chosen automatically{why}"
        raise BadInput(f"No group size of {AUTO_GROUP_SIZES} divides every layer's input width "
                       f"({', '.join(map(str, widths))}); pass --group-size with a divisor.")
    size = int(requested)
    misfits = [f"{n} ({i})" for n, i, _ in layers if i % size]
    if misfits:
        shown = ", ".join(misfits[:8]) + (f" and {len(misfits) - 8} more" if len(misfits) > 8
                                          else "")
        fits = [s for s in AUTO_GROUP_SIZES if all(i % s == 0 for _, i, _ in layers)]
        raise BadInput(f"Group size {size} does not divide the input width of {len(misfits)} "
                       f"layers: {shown}. Use --group-size auto"
                       + (f" (it would pick {fits[0]})." if fits else "."))
    return size, f"group size {size} as requested"


def check_block_shapes(layers: list[tuple[str, int, int]], scheme: str) -> None:
    """Block scales need every layer's output width to be a whole number of blocks: vLLM 0.32
    fuses q/k/v and gate/up into one matmul and refuses a block that straddles two of them, and
    tensor-parallel splits cut layers along blocks (validate_fp8_block_shape)."""
    misfits = [f"{n} ({o})" for n, _, o in layers if o % BLOCK]
    if misfits:
        shown = ", ".join(misfits[:6]) + (f" and {len(misfits) - 6} more" if len(misfits) > 6
                                          else "")
        raise BadInput(f"{scheme} scales weights in {BLOCK}x{BLOCK} blocks, and vLLM serves it "
                       f"only when every layer's output width is a multiple of {BLOCK}; "
                       f"{len(misfits)} layers of this model are not: {shown}. Use --scheme "
                       "FP8_DYNAMIC (one scale per channel) for this model.")


def _check_resources(estimate: dict, out_parent: str) -> None:
    available = hardware.memory_gib()["available_gib"] * 1024**3
    if available and estimate["memory_bytes"] > available:
        raise BadInput(
            f"Quantizing needs about {estimate['memory_bytes'] / 1024**3:.1f} GiB of RAM "
            f"(weights plus cached calibration activations) but only "
            f"{available / 1024**3:.1f} GiB is free. Use fewer --num-samples or a shorter "
            f"--seq-len, or a machine with more memory."
        )
    free = shutil.disk_usage(out_parent).free
    if estimate["output_bytes"] * 2 > free:  # the output plus its temporary copy
        raise BadInput(f"The output needs about {estimate['output_bytes'] / 1024**3:.2f} GiB "
                       f"but {out_parent} has {free / 1024**3:.2f} GiB free.")


def calibration_samples(tokenizer, texts: list[str], num_samples: int, seq_len: int,
                        seed: int = 0, prefix: list[int] | tuple = ()) -> list[list[int]]:
    """Token chunks of at most seq_len, spread over documents: documents are shuffled with a
    fixed seed, then the first chunk of each is taken, then the second, and so on. Each sample
    starts with the model's prefix (its BOS where the tokenizer adds one), as every request the
    quantized model will serve does (core/token_prefix.py)."""
    room = seq_len - len(prefix)
    per_doc = []
    for text in texts:
        ids = without_prefix(tokenizer(text, add_special_tokens=False)["input_ids"], prefix)
        chunks = [list(prefix) + ids[i:i + room] for i in range(0, len(ids), room)]
        per_doc.append([c for c in chunks if len(c) - len(prefix) >= min(room, 16)])
    random.Random(seed).shuffle(per_doc)
    samples: list[list[int]] = []
    depth = 0
    while len(samples) < num_samples and any(len(d) > depth for d in per_doc):
        samples.extend(d[depth] for d in per_doc if len(d) > depth)
        depth += 1
    if not samples:
        raise BadInput("The calibration corpus gave no usable text (every record is shorter "
                       "than 16 tokens).")
    return samples[:num_samples]


def samples_sha256(samples: list[list[int]]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update((",".join(map(str, sample)) + ";").encode())
    return digest.hexdigest()


def _load_model(params: dict, events: Events):
    """The model to quantize: the base, or the base with an adapter merged into its weights."""
    from thrifty.libs import hf, lora

    events.status("loading weights")
    model = hf.load_causal_lm(params["model_path"], dtype="auto")
    if params.get("adapter_path"):
        events.status("merging the adapter into the base weights")
        model = lora.merged(lora.with_adapter(model, params["adapter_path"],
                                              params.get("adapter_weight", 1.0)))
    return model


def _modifiers(params: dict, group_size: int | None) -> list:
    from thrifty.libs import llmc

    gptq = params["method"] in GPTQ_METHODS
    groups = llmc.scheme_groups(params["scheme"], params["bits"], params["symmetric"],
                                group_size, params["actorder"] if gptq else None,
                                params.get("observer"))
    return llmc.recipe(params["method"], groups, ignore_patterns(params.get("ignore", ())),
                       params["actorder"], params["dampening_frac"], params["block_size"],
                       params.get("smoothquant"))


def quantize(params: dict, events: Events) -> dict:
    """Calibrate and save a compressed-tensors checkpoint into params['out_dir']."""
    from thrifty.libs import hf, llmc

    started = time.monotonic()
    events.status("preflight: architecture, group size, memory, disk")
    decided = plan(params["model_path"], params["method"], params["scheme"], params["bits"],
                   params["group_size"], params["num_samples"], params["seq_len"],
                   str(Path(params["out_dir"]).parent), tuple(params.get("ignore", ())))
    events.emit(type="message", text=f"{decided['architecture']}: {decided['layers_count']} "
                f"linear layers to quantize; {decided['group_size_note']}.")

    tokenizer = hf.load_tokenizer(params["model_path"])
    prefix = hf.prefix_ids(tokenizer)
    samples: list[list[int]] = []
    if params["needs_data"]:
        events.status("tokenizing calibration data")
        records = corpora.read_records(Path(params["calib_path"]))
        texts = corpora.record_texts(records, hf.chat_renderer(tokenizer))
        samples = calibration_samples(tokenizer, texts, params["num_samples"], params["seq_len"],
                                      params.get("seed", 0), prefix)

    model = _load_model(params, events)
    modifiers = _modifiers(params, decided["group_size"])
    total = decided["decoder_layers_count"] + 1  # + the final norm / head subgraph
    stage = f"{params['method'].upper()} calibration"
    events.progress(stage, 0, total, "layers")
    calib_started = time.monotonic()
    dataset = llmc.calibration_dataset(samples) if samples else None
    llmc.oneshot(model, dataset, modifiers, len(samples), params["seq_len"],
                 lambda done: events.progress(stage, min(done, total), total, "layers"))
    events.progress(stage, total, total, "layers")
    calibrate_s = time.monotonic() - calib_started

    events.status("saving compressed checkpoint")
    llmc.save_compressed(model, params["out_dir"])
    hf.save_tokenizer(tokenizer, params["out_dir"])
    return {
        **decided,
        "method": params["method"],
        "scheme": params["scheme"],
        "bits": params["bits"],
        "symmetric": params["symmetric"],
        "activations": SCHEMES[params["scheme"]].activations,
        "smoothquant": params.get("smoothquant"),
        "ignored_layers": ignore_patterns(params.get("ignore", ())),
        "actorder": params["actorder"] if params["method"] in GPTQ_METHODS else None,
        "dampening_frac": params["dampening_frac"] if params["method"] in GPTQ_METHODS else None,
        "observer": params.get("observer"),
        "recipe": llmc.recipe_yaml(modifiers),
        "calibration": {
            "corpus": params["calib"], "samples_count": len(samples),
            "seq_len_tokens": params["seq_len"], "tokens": sum(map(len, samples)),
            "seed": params.get("seed", 0), "prefix_ids": prefix,
            "sha256": samples_sha256(samples) if samples else None,
        },
        "versions": {"llmcompressor": llmc.version(), **hf.library_versions()},
        "calibrate_s": round(calibrate_s, 1),
        "quantize_s": round(time.monotonic() - started, 1),
    }
