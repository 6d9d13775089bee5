"""`thrifty distill`: a teacher's next-token distributions taught to a smaller student.

Stages, each resumable: prepare (tokenizer check, training sequences, derived student) in the
compress engine; the teacher's top-k log-probabilities captured offline with vLLM (or an
online teacher during training); training with the transformers Trainer; evaluation of
teacher, student before and student after with `thrifty eval`'s perplexity task.
"""

import os
import shutil
from pathlib import Path

import click

from thrifty.assets import architectures, prepare
from thrifty.core import tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.files import read_json, write_json, write_text
from thrifty.core.output import emit_json, json_option, table
from thrifty.core.runs import RunRecord
from thrifty.distill import plan
from thrifty.distill.report import markdown_report, summary
from thrifty.formats import teacher_signal

TRAIN_RESULT = "train.json"  # the training job's figures, kept for a later --resume


@click.command("distill")
@click.option("--teacher", required=True, help="The model to learn from: built-in, folder or hub "
              "id (a quantized checkpoint works for the offline signal).")
@click.option("--student", help="An existing smaller model with the teacher's tokenizer.")
@click.option("--student-from-teacher", is_flag=True,
              help="Derive the student from the teacher by keeping --keep-layers of its layers.")
@click.option("--keep-layers", type=click.IntRange(min=1),
              help="Decoder layers a derived student keeps (fewer than the teacher's).")
@click.option("--layer-selection", type=click.Choice(["importance", "even"]),
              default="importance", show_default=True,
              help="importance: keep the layers that change their input most (block influence, "
                   "as in ShortGPT); even: evenly spaced, first and last kept.")
@click.option("--data", default="enwiki", show_default=True,
              help="Training text: `enwiki` (its calibration split; evaluation uses the other) "
                   "or a .txt / .jsonl file.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (resumable; see --resume).")
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=1),
              help="Optimizer steps; each sees a fresh batch of sequences while the data lasts.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Sequences per process per micro-batch.")
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1),
              help="Micro-batches per optimizer step.")
@click.option("--seq-len", default=256, show_default=True, type=click.IntRange(min=8),
              help="Tokens per training sequence.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (cosine decay)  [default: 1e-4, or 2e-4 with --lora]")
@click.option("--lora", is_flag=True, help="Train LoRA adapters on every projection of the "
              "student instead of all its weights.")
@click.option("--lora-rank", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--loss", type=click.Choice(["fkl", "rkl", "jsd"]), default="fkl", show_default=True,
              help="fkl: forward KL (teacher || student); rkl: reverse KL; jsd: generalized "
                   "Jensen-Shannon with --beta (TRL's GKD).")
@click.option("--beta", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True,
              max_open=True), help="Teacher weight in the JSD mixture.")
@click.option("--temperature", default=1.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Softens both distributions; the soft loss is scaled by T^2.")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the distillation loss; 1 - alpha goes to cross-entropy on the "
                   "labels. 0 trains on cross-entropy alone (no teacher signal).")
@click.option("--teacher-signal", type=click.Choice(["offline", "online"]), default="offline",
              show_default=True, help="offline: the teacher's top-k log-probabilities captured "
              "once with vLLM and stored on disk; online: the teacher runs beside the student "
              "(full vocabulary; small teachers).")
@click.option("--top-k", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Teacher log-probabilities kept per position (offline).")
@click.option("--shard-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Sequences per teacher-signal shard (the unit a capture resumes from).")
@click.option("--teacher-tp", default=1, show_default=True, type=click.IntRange(min=1),
              help="GPUs the vLLM teacher is split over (tensor parallel) during capture.")
@click.option("--capture-only", is_flag=True, help="Stop after capturing the teacher signal "
              "(train later, e.g. on other machines, with --resume).")
@click.option("--save-steps", default=50, show_default=True, type=click.IntRange(min=1),
              help="Checkpoint every N steps (the last two are kept).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Training processes on this machine (DDP with torchrun: one per GPU; gloo "
                   "on CPU).")
@click.option("--accelerate-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Launch training with `accelerate launch --config_file FILE` (FSDP or "
                   "DeepSpeed ZeRO-3 across GPUs and machines); replaces --processes.")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass (less memory, ~30% slower).")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Perplexity of teacher, student before and student after.")
@click.option("--eval-tokens", default=8192, show_default=True, type=click.IntRange(min=16),
              help="Evaluation tokens (enwiki's evaluation split).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue an interrupted distillation in --out "
              "(capture from its last shard, training from its last checkpoint).")
@click.option("--force", is_flag=True, help="Replace what --out holds and start over.")
@json_option
def distill(**options) -> None:
    """Distill --teacher into a smaller student and evaluate both.

    \b
    thrifty distill --teacher smollm2-135m --student-from-teacher --keep-layers 15 --out d/
    thrifty distill --teacher big-70b/ --student small-7b/ --lora --out d/ --capture-only
    """
    as_json = options.pop("as_json")
    settings = resolve_settings(options)
    out: Path = options["out_dir"].resolve()
    inputs = resolve_inputs(settings)  # every input checked before anything is written
    plan.open_output(out, settings, options["resume"], options["force"])
    with RunRecord("distill", {**settings, "out": str(out)},
                   engines_used=("compress", "vllm")) as run:
        result = run_stages(settings, inputs, options, out, run)
        run.record(result["measured"], details=result["details"])
    if options["capture_only"] and as_json:
        emit_json({"run": str(run.path), "out": str(out), **result})
        return
    if options["capture_only"]:
        click.echo(f"Teacher signal captured in {out / 'signal'}: "
                   f"{result['measured']['signal_bytes']:,} bytes, "
                   f"{result['measured'].get('signal_bytes_per_token', 0):.0f} bytes/token. "
                   "Train with the same command and --resume.")
        return
    write_json(out / "result.json", result)
    write_text(out / "report.md", markdown_report(result))
    if as_json:
        emit_json({"run": str(run.path), "out": str(out), **result})
        return
    title, columns, rows = summary(result)
    if rows:
        table(title, columns, rows)
    else:
        click.echo(title)
    click.echo(f"Student: {out / 'student'}   Report: {out / 'report.md'}   Run record: {run.path}")


def resolve_settings(options: dict) -> dict:
    if options["student"] and options["student_from_teacher"]:
        raise BadInput("Give either --student or --student-from-teacher, not both.")
    if not options["student"] and not options["student_from_teacher"]:
        raise BadInput("Give the student: --student MODEL (a smaller model with the teacher's "
                       "tokenizer) or --student-from-teacher --keep-layers N.")
    if options["student_from_teacher"] and not options["keep_layers"]:
        raise BadInput("--student-from-teacher needs --keep-layers N: how many of the teacher's "
                       "decoder layers the student keeps.")
    if options["keep_layers"] and not options["student_from_teacher"]:
        raise BadInput("--keep-layers applies to a student derived with --student-from-teacher.")
    if options["accelerate_config"] and options["processes"] > 1:
        raise BadInput("--accelerate-config sets the processes itself; drop --processes.")
    learning_rate = options["learning_rate"] or (2e-4 if options["lora"] else 1e-4)
    data = options["data"]
    if data != "enwiki":
        data = str(Path(data).expanduser().resolve())
    return {
        "teacher": options["teacher"], "student": options["student"],
        "keep_layers": options["keep_layers"], "layer_selection": options["layer_selection"],
        "data": data, "seq_len": options["seq_len"], "steps": options["steps"],
        "batch_size": options["batch_size"], "grad_accum": options["grad_accum"],
        "learning_rate": learning_rate, "warmup_steps": max(1, options["steps"] // 20),
        "lora": options["lora"], "lora_rank": options["lora_rank"], "loss": options["loss"],
        "beta": options["beta"], "temperature": options["temperature"],
        "alpha": options["alpha"], "teacher_signal": options["teacher_signal"],
        "top_k": options["top_k"], "world_size": options["processes"], "seed": options["seed"],
        "accelerate_config": (str(options["accelerate_config"])
                              if options["accelerate_config"] else None),
    }


def launcher(settings: dict) -> list[str] | None:
    if settings["accelerate_config"]:
        return ["-m", "accelerate.commands.launch", "--config_file", settings["accelerate_config"]]
    if settings["world_size"] > 1:
        return ["-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(settings["world_size"])]
    return None


def resolve_inputs(settings: dict) -> dict:
    teacher = prepare.ensure_model(settings["teacher"])
    if settings["teacher_signal"] == "offline":
        architectures.check_vllm_serves(teacher, "captures the teacher's signal in vLLM")
    if settings["keep_layers"]:
        plan.check_keep_layers(settings["keep_layers"], plan.layers_count(teacher.path),
                               teacher.name)
    return {"teacher": teacher,
            "student": prepare.ensure_model(settings["student"]) if settings["student"] else None,
            "data_path": prepare.ensure_corpus(settings["data"], "calibration")}


def run_stages(settings: dict, inputs: dict, options: dict, out: Path, run: RunRecord) -> dict:
    teacher, student, data_path = inputs["teacher"], inputs["student"], inputs["data_path"]
    offline = settings["teacher_signal"] == "offline" and settings["alpha"] > 0
    signal_dir = out / "signal"
    student_init = Path(student.path) if student else out / "student-init"
    prepared = run_in_engine(tasks.DISTILL_PREPARE, {
        "teacher_path": teacher.path, "teacher_name": teacher.name,
        "student_path": student.path if student else None,
        "student_name": student.name if student else None,
        "keep_layers": settings["keep_layers"], "layer_selection": settings["layer_selection"],
        "student_init_dir": str(student_init), "data_path": str(data_path),
        "data_name": settings["data"], "seq_len": settings["seq_len"],
        "sequences": plan.sequences_needed(settings), "signal_dir": str(signal_dir),
        "offline": offline, "top_k": settings["top_k"], "shard_size": options["shard_size"],
    }, run.path, title="preparing the distillation")
    measured: dict = {"train_sequences_count": prepared["sequences_count"],
                      "train_tokens": prepared["train_tokens"]}
    details: dict = {"settings": settings, "prepare": prepared, "teacher": teacher.path,
                     "student_init": str(student_init)}

    if offline:
        captured = run_in_engine(tasks.TEACHER_TOPK, {
            "signal_dir": str(signal_dir), "teacher_path": teacher.path,
            "tensor_parallel": options["teacher_tp"]}, run.path,
            title="capturing the teacher signal")
        manifest = teacher_signal.read_manifest(signal_dir)
        measured["signal_bytes"] = teacher_signal.signal_bytes(manifest)
        measured["signal_bytes_per_token"] = round(teacher_signal.bytes_per_token(manifest), 2)
        if captured.get("capture_positions_per_s"):
            measured["capture_tokens_per_s"] = captured["capture_positions_per_s"]
        details["capture"] = captured
    elif options["capture_only"]:
        raise BadInput("--capture-only needs an offline teacher signal (--teacher-signal offline "
                       "and --alpha above 0).")
    if options["capture_only"]:
        return {"measured": measured, "details": details}

    final = out / "student"
    if not final.is_dir():
        train_student(settings, options, out, teacher.path, student_init, run)
    trained = read_json(out / TRAIN_RESULT)
    measured.update({k: trained[k] for k in ("train_s", "train_tokens_per_s", "steps_count")
                     if trained.get(k) is not None})
    details["train"] = trained
    if options["evaluate"]:
        rows = evaluate(teacher, student_init, final, options["eval_tokens"], run)
        details["eval"] = rows
        measured.update({"teacher_perplexity": rows[0]["perplexity"],
                         "student_before_perplexity": rows[1]["perplexity"],
                         "student_after_perplexity": rows[2]["perplexity"],
                         "eval_tokens": rows[0]["eval_tokens"]})
        for name, row in (("student_before", rows[1]), ("student_after", rows[2])):
            if row.get("vs_base"):  # None when the student's tokenizer differs
                measured[f"{name}_kld_nats"] = row["vs_base"]["kld_mean"]
                measured[f"{name}_top1_agreement_pct"] = row["vs_base"]["top1_agreement_pct"]
    return {"measured": measured, "details": details}


def train_student(settings: dict, options: dict, out: Path, teacher_path: str,
                  student_init: Path, run: RunRecord) -> None:
    """Train into <out>/.student.partial; publish student/ (and adapter/) only when done."""
    partial = out / ".student.partial"
    shutil.rmtree(partial, ignore_errors=True)
    trained = run_in_engine(tasks.DISTILL_TRAIN, {
        **{k: settings[k] for k in ("steps", "batch_size", "grad_accum", "learning_rate",
                                    "warmup_steps", "lora", "lora_rank", "loss", "beta",
                                    "temperature", "alpha", "seed")},
        "teacher_mode": settings["teacher_signal"], "teacher_path": teacher_path,
        "student_path": str(student_init), "signal_dir": str(out / "signal"),
        "checkpoints_dir": str(out / "checkpoints"), "final_dir": str(partial),
        "save_steps": options["save_steps"], "resume": True,
        "gradient_checkpointing": options["gradient_checkpointing"],
    }, run.path, title="training the student", launcher=launcher(settings),
        env={"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // settings["world_size"]))})
    write_json(out / TRAIN_RESULT, trained)
    if settings["lora"]:
        os.replace(partial / "merged", out / "student")
        shutil.rmtree(out / "adapter", ignore_errors=True)
        os.replace(partial, out / "adapter")
    else:
        os.replace(partial, out / "student")


def evaluate(teacher, student_init: Path, final: Path, eval_tokens: int, run: RunRecord) -> list:
    corpus_path = prepare.ensure_corpus("enwiki", "evaluation")
    result = run_in_engine(tasks.EVALUATE, {
        "models": [{"name": f"teacher ({teacher.name})", "path": teacher.path},
                   {"name": "student before", "path": str(student_init)},
                   {"name": "student after", "path": str(final)}],
        "corpus_path": str(corpus_path), "max_tokens": eval_tokens, "window": 1024,
        "stride": None, "work_dir": str(run.path)},
        run.path, title="evaluating against the teacher")
    return result["rows"]
