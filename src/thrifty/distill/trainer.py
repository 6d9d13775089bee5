"""Compress-engine task `train`: a transformers Trainer whose loss is the distillation loss.

The Trainer brings what a long run needs: checkpoints every N steps (model, optimizer,
scheduler, RNG and data position), --resume from the last one, bf16 on GPUs, and several
processes: launched with torchrun it trains with DDP (gloo on CPU, NCCL on GPUs); launched by
`accelerate launch --config_file` it takes FSDP or DeepSpeed ZeRO-3 from that file. Every
Trainer call of thrifty is in this module.
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

from thrifty.core.jobs import Events
from thrifty.distill.losses import distillation_loss
from thrifty.formats import teacher_signal
from thrifty.libs import hf, lora


class SequenceDataset(torch.utils.data.Dataset):
    """The packed training sequences, with the teacher's top-k rows when distilling offline."""

    def __init__(self, signal_dir: Path, with_signal: bool):
        self.reader = teacher_signal.SignalReader(signal_dir) if with_signal else None
        self.tokens = teacher_signal.load_tokens(signal_dir)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __getitem__(self, index: int) -> dict:
        if self.reader is None:
            return {"input_ids": torch.from_numpy(np.array(self.tokens[index], dtype=np.int64))}
        tokens, ids, logprobs = self.reader.get(index)
        return {"input_ids": torch.from_numpy(np.array(tokens, dtype=np.int64)),
                "teacher_ids": torch.from_numpy(np.array(ids, dtype=np.int64)),
                "teacher_logprobs": torch.from_numpy(np.array(logprobs, dtype=np.float32))}


class DistillationTrainer(Trainer):
    """Trainer with the distillation loss; keeps the CE and KD parts for the logs."""

    def __init__(self, *args, loss_settings: dict, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        # The loss is a mean per micro-batch: let the Trainer divide by accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_settings = loss_settings
        self.teacher = teacher
        self._parts = {"ce": 0.0, "kd": 0.0, "count": 0}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        outputs = model(input_ids=input_ids)
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(input_ids=input_ids).logits
        parts = distillation_loss(outputs.logits, input_ids, **self.loss_settings,
                                  teacher_ids=inputs.get("teacher_ids"),
                                  teacher_logprobs=inputs.get("teacher_logprobs"),
                                  teacher_logits=teacher_logits)
        self._parts["ce"] += parts["ce"].item()
        self._parts["kd"] += parts["kd"].item()
        self._parts["count"] += 1
        return (parts["loss"], outputs) if return_outputs else parts["loss"]

    def _load_optimizer_and_scheduler(self, checkpoint):
        """Resuming DDP on CPU: transformers maps the optimizer state to args.device, which is
        `cpu:RANK` there, and torch.load knows no location "cpu:0" (transformers 5.17, torch
        2.13): the resume died. Map it to plain "cpu" for the length of the call."""
        if checkpoint is None or self.args.device.type != "cpu":
            return super()._load_optimizer_and_scheduler(checkpoint)
        original = torch.load

        # process-wide for the call: it must stay a pure pass-through but for that one rewrite
        def load_on_cpu(*args, map_location=None, **kwargs):
            if isinstance(map_location, torch.device) and map_location.type == "cpu":
                map_location = "cpu"
            return original(*args, map_location=map_location, **kwargs)

        torch.load = load_on_cpu
        try:
            return super()._load_optimizer_and_scheduler(checkpoint)
        finally:
            torch.load = original

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self._parts["count"] and "loss" in logs:
            logs["ce"] = round(self._parts["ce"] / self._parts["count"], 4)
            logs["kd"] = round(self._parts["kd"] / self._parts["count"], 4)
            self._parts = {"ce": 0.0, "kd": 0.0, "count": 0}
        super().log(logs, start_time)


class ProgressReporter(TrainerCallback):
    """Steps, loss and tokens/s as job events (the CLI draws the bar and the ETA)."""

    def __init__(self, events: Events, tokens_per_step: int):
        self.events = events
        self.tokens_per_step = tokens_per_step
        self.history: list[dict] = []
        self.first_step = 0
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step
        self.started = time.monotonic()
        self.events.progress("train", state.global_step, state.max_steps, "steps")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        elapsed = time.monotonic() - self.started
        steps = state.global_step - self.first_step
        tokens_per_s = steps * self.tokens_per_step / elapsed if elapsed > 0 else 0.0
        self.history.append({"step": state.global_step, "loss": float(logs["loss"]),
                             "ce": logs.get("ce"), "kd": logs.get("kd"),
                             "learning_rate": logs.get("learning_rate")})
        self.events.progress("train", state.global_step, state.max_steps, "steps")
        self.events.status(f"loss {float(logs['loss']):.3f} (ce {logs.get('ce')}, "
                           f"kd {logs.get('kd')}) · {tokens_per_s:,.0f} tok/s")


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was completely written; newer, half-written ones are removed.

    The Trainer writes a checkpoint in place (no temporary name) and trainer_state.json last,
    so a run killed while saving leaves a folder that transformers' get_last_checkpoint would
    pick and fail to load.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return None


def training_arguments(params: dict) -> TrainingArguments:
    on_gpu = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=params["checkpoints_dir"],
        max_steps=params["steps"],
        per_device_train_batch_size=params["batch_size"],
        gradient_accumulation_steps=params["grad_accum"],
        learning_rate=params["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=params["warmup_steps"],
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=params["save_steps"],
        save_total_limit=2,
        seed=params["seed"],
        data_seed=params["seed"],
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not on_gpu,
        gradient_checkpointing=params["gradient_checkpointing"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        report_to=[],
        disable_tqdm=True,
        log_level="warning",
    )


def train(params: dict, events: Events) -> dict:
    args = training_arguments(params)
    torch.manual_seed(params["seed"])
    events.status("loading the student")
    tokenizer = hf.load_tokenizer(params["student_path"])
    model = hf.load_causal_lm(params["student_path"])
    model.train()
    if params["lora"]:
        model = lora.add_lora(model, params["lora_rank"], 2 * params["lora_rank"],
                              lora.ALL_PROJECTIONS)
    teacher = None
    if params["teacher_mode"] == "online" and params["alpha"] > 0:
        events.status("loading the teacher")
        teacher = hf.load_causal_lm(params["teacher_path"],
                                    dtype="bfloat16" if args.bf16 else "float32").to(args.device)
    offline = params["teacher_mode"] == "offline" and params["alpha"] > 0
    dataset = SequenceDataset(Path(params["signal_dir"]), with_signal=offline)
    tokens_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                       * args.world_size * int(dataset.tokens.shape[1]))
    reporter = ProgressReporter(events, tokens_per_step)
    trainer = DistillationTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        data_collator=default_data_collator,  # equal-length sequences: stack, never pad
        callbacks=[reporter], teacher=teacher,
        loss_settings={"loss": params["loss"], "alpha": params["alpha"],
                       "temperature": params["temperature"], "beta": params["beta"]})
    resume_from = last_complete_checkpoint(params["checkpoints_dir"]) if params["resume"] else None
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.monotonic() - started
    steps_run = trainer.state.global_step - reporter.first_step

    events.status("saving the student")
    final_dir = Path(params["final_dir"])
    trainer.save_model(str(final_dir))  # every rank takes part (FSDP gathers the weights)
    if params["lora"] and trainer.is_world_process_zero():
        plain = lora.merged(lora.with_adapter(hf.load_causal_lm(params["student_path"]),
                                              str(final_dir)))
        plain.save_pretrained(str(final_dir / "merged"), safe_serialization=True)
        hf.save_tokenizer(tokenizer, str(final_dir / "merged"))
    return {
        "steps_count": trainer.state.global_step,
        "steps_run_count": steps_run,
        "resumed_from": resume_from,
        "world_size": args.world_size,
        "tokens_per_step": tokens_per_step,
        "train_s": round(train_s, 2),
        "train_tokens_per_s": round(steps_run * tokens_per_step / train_s, 1) if train_s else None,
        "train_loss": output.training_loss,
        "history": reporter.history,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "bf16": args.bf16,
        "device": str(args.device),
    }
