"""A user's lm-eval task file (YAML) and its JSONL data, checked before any engine work.

thrifty runs lm-eval offline, so a task must read local data: `dataset_path: json` with
`dataset_kwargs.data_files` naming JSONL files (relative paths are read from the current
folder, as lm-eval itself reads them). The checks here catch, with the file and line, what
would otherwise fail in the engine after the model has loaded, with a datasets or jinja
traceback: a line that is not a JSON object, or one that lacks a field a template reads.
"""

import re
from pathlib import Path

import yaml

from thrifty.core.errors import BadInput
from thrifty.core.files import json_object_line

TEMPLATE_FIELDS = ("doc_to_text", "doc_to_target", "doc_to_choice", "description")
# Root names of jinja expressions ({{ question.strip() }} -> question), and names a template
# binds itself ({% for c in choices %}) or jinja provides, which are not data fields.
EXPRESSION_ROOT = re.compile(r"\{\{-?\s*([A-Za-z_]\w*)")
BOUND_NAME = re.compile(r"\{%-?\s*(?:for|set)\s+([A-Za-z_]\w*)")
JINJA_NAMES = {"loop", "range", "true", "false", "none", "True", "False", "None"}
FIELD_NAME = re.compile(r"^[A-Za-z_]\w*$")
MAX_INCLUDES = 8


class Function(str):
    """A `!function module.name` value: lm-eval's hook, run in the engine, not checked here."""


class TaskFileLoader(yaml.SafeLoader):
    """yaml's safe loader, plus lm-eval's `!function` tag."""


TaskFileLoader.add_constructor("!function",
                               lambda loader, node: Function(loader.construct_scalar(node)))


def read_task_file(path: Path, depth: int = 0) -> dict:
    """The task config of a YAML file, with lm-eval's `include:` merged in (the file wins)."""
    if not path.is_file():
        raise BadInput(f"The task file {path} does not exist (or is not a file).")
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=TaskFileLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(f"The task file {path} is not valid YAML: {' '.join(str(exc).split())}"
                       ) from exc
    if not isinstance(config, dict):
        raise BadInput(f"The task file {path} holds a YAML {type(config).__name__}, not a "
                       "task config (a mapping with task, dataset_path, doc_to_text, ...).")
    include = config.pop("include", None)
    if include:
        if depth >= MAX_INCLUDES:
            raise BadInput(f"The task file {path} includes files {MAX_INCLUDES} levels deep; "
                           "check for an include cycle.")
        config = {**read_task_file(path.parent / str(include), depth + 1), **config}
    return config


def check_task_file(path: Path) -> dict:
    """Check a task YAML and its data; return its task name, config and absolute data files."""
    path = Path(path).expanduser().resolve()
    config = read_task_file(path)
    name = config.get("task")
    if "group" in config or not isinstance(name, str):
        raise BadInput(f"The task file {path} defines no single task (a `task:` name); thrifty "
                       "runs one multiple-choice task per file, not a group.")
    if config.get("output_type") != "multiple_choice":
        raise BadInput(f"The task file {path} has output_type "
                       f"{config.get('output_type', 'generate_until (the default)')!r}; thrifty "
                       "reports accuracy, so give `output_type: multiple_choice`.")
    if config.get("dataset_path") != "json":
        raise BadInput(f"The task file {path} reads dataset_path "
                       f"{config.get('dataset_path')!r}; thrifty runs lm-eval offline, so a "
                       "task reads local JSONL data: `dataset_path: json` with "
                       "`dataset_kwargs: {data_files: {test: /path/to/data.jsonl}}`.")
    files = data_files(path, config)
    fields = None if "process_docs" in config else template_fields(config)
    for data in files:
        check_jsonl(data, fields)
    return {"name": name, "config": config, "data_files": [str(f) for f in files]}


def data_files(path: Path, config: dict) -> list[Path]:
    kwargs = config.get("dataset_kwargs") or {}
    named = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    if not named:
        raise BadInput(f"The task file {path} names no data: give "
                       "`dataset_kwargs: {data_files: {test: /path/to/data.jsonl}}`.")
    if isinstance(named, dict):
        split = config.get("test_split") or config.get("validation_split")
        if split not in named:
            raise BadInput(f"The task file {path} evaluates the split {split!r}, but its "
                           f"data_files name the splits {sorted(named)}.")
        named = named[split]
    files = [Path(f).expanduser().resolve() for f in ([named] if isinstance(named, str)
                                                       else named)]
    for data in files:
        if not data.is_file():
            raise BadInput(f"The task file {path} names the data file {data}, which does not "
                           "exist (relative paths are read from the current folder, as "
                           "lm-eval reads them).")
    return files


def template_fields(config: dict) -> set[str]:
    """The data fields the task's prompt templates read."""
    fields = set()
    for key in TEMPLATE_FIELDS:
        value = config.get(key)
        if isinstance(value, Function) or not isinstance(value, str):
            continue  # a hook, a list of literal choices, or absent
        if FIELD_NAME.match(value) and key != "description":
            fields.add(value)  # lm-eval reads a bare name as that field of each line
        else:
            bound = set(BOUND_NAME.findall(value)) | JINJA_NAMES
            fields |= set(EXPRESSION_ROOT.findall(value)) - bound
    return fields


def check_jsonl(path: Path, fields: set[str] | None) -> int:
    """Every line one JSON object with the fields the prompt templates read."""
    try:
        # split("\n"), not splitlines(): JSON strings may hold U+2028 and other line breaks.
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise BadInput(f"The data file {path} is not UTF-8 text ({exc.reason} at byte "
                       f"{exc.start}); lm-eval reads UTF-8 JSONL.") from exc
    count = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            _check_line(f"{path} line {number}", line, fields)
            count += 1
    if count == 0:
        raise BadInput(f"The data file {path} has no questions (no JSON lines).")
    return count


def _check_line(where: str, line: str, fields: set[str] | None) -> None:
    record = json_object_line(where, line, "lm-eval reads one JSON object per line.")
    missing = sorted((fields or set()) - set(record))
    if missing:
        raise BadInput(f"{where} has no field {', '.join(missing)}, which the task's prompt "
                       "templates read.")
