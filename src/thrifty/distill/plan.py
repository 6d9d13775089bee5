"""A distillation's output folder and its settings: what is done, what a rerun may resume.

<out>/
  distill.json    the settings the run started with (a --resume must match them)
  signal/         training sequences and the teacher's top-k signal (formats/teacher_signal.py)
  student-init/   the student derived from the teacher (with --student-from-teacher)
  checkpoints/    Trainer checkpoints (model, optimizer, scheduler, RNG, data position)
  student/        the trained student, a plain checkpoint that thrifty eval / serve load
  adapter/        the LoRA adapter (with --lora), servable over the student's base
  report.md, result.json   teacher / student-before / student-after and the training figures
"""

import shutil
from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.files import read_json, write_json

SETTINGS = "distill.json"

# Settings that change what a resumed run would compute; the rest (evaluation, checkpoint
# frequency) may differ between the first run and a --resume.
RESUME_KEYS = ("teacher", "student", "keep_layers", "layer_selection", "data", "seq_len",
               "steps", "batch_size", "grad_accum", "learning_rate", "warmup_steps", "lora",
               "lora_rank", "loss", "beta", "temperature", "alpha", "teacher_signal", "top_k",
               "world_size", "seed")


def layers_count(model_path: str) -> int | None:
    """Decoder layers of a local model (config.json), or None when it cannot be read here."""
    config_path = Path(model_path) / "config.json"
    if not config_path.is_file():
        return None
    config = read_json(config_path)
    return (config.get("num_hidden_layers")
            or (config.get("text_config") or {}).get("num_hidden_layers"))


def check_keep_layers(keep: int, teacher_layers: int | None, teacher: str) -> None:
    if teacher_layers is not None and keep >= teacher_layers:
        raise BadInput(f"--keep-layers {keep} is not fewer than the {teacher_layers} layers of the "
                       f"teacher {teacher}: a derived student keeps some of the teacher's layers, "
                       f"so give a number from 1 to {teacher_layers - 1}.")


def sequences_needed(settings: dict) -> int:
    """One pass over distinct sequences: every optimizer step sees a fresh global batch."""
    return (settings["steps"] * settings["batch_size"] * settings["grad_accum"]
            * settings["world_size"])


def open_output(out: Path, settings: dict, resume: bool, force: bool) -> None:
    """Start, restart (--force) or resume (--resume) the distillation in `out`."""
    saved_path = out / SETTINGS
    if out.exists() and any(out.iterdir()):
        if force:
            shutil.rmtree(out)
        elif not saved_path.is_file():
            raise BadInput(f"The output folder {out} exists and is not a thrifty distillation. "
                           "Choose another --out, or pass --force to replace it.")
        elif resume:
            check_resumable(read_json(saved_path), settings, out)
            return
        elif (out / "student").is_dir():
            raise BadInput(f"{out} already holds a finished distillation. Pass --force to run it "
                           "again from scratch, or choose another --out.")
        else:
            raise BadInput(f"{out} holds an unfinished distillation. Rerun with --resume to "
                           "continue it from where it stopped, or --force to start over.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(saved_path, settings)


def check_resumable(saved: dict, settings: dict, out: Path) -> None:
    changed = [f"{key} ({saved.get(key)!r} then, {settings.get(key)!r} now)"
               for key in RESUME_KEYS if saved.get(key) != settings.get(key)]
    if changed:
        raise BadInput(f"--resume continues the distillation in {out} with the settings it "
                       f"started with, but these differ: {'; '.join(changed)}. Rerun with the "
                       "original settings, or pass --force to start over with the new ones.")
