"""Compress-engine task `prepare`: everything before training that needs the models.

1. the teacher and the student must share one tokenizer (distillation compares distributions
   token id by token id);
2. the training text is tokenized with it and packed into sequences of seq_len tokens;
3. a student derived from the teacher keeps N of its decoder layers (depth pruning as in
   Minitron), chosen by block importance on the first sequences or evenly spaced;
4. the teacher-signal manifest is started, so that the capture knows what to do and resumes.

Each step is skipped when its output already exists: rerunning after an interruption resumes.
"""

from pathlib import Path

from thrifty.assets import corpora
from thrifty.core.errors import BadInput
from thrifty.core.files import atomic_folder, read_json, write_json
from thrifty.core.jobs import Events
from thrifty.core.token_prefix import without_prefix
from thrifty.formats import teacher_signal

IMPORTANCE_SEQUENCES = 8  # sequences used to rank the teacher's layers
STUDENT_INFO = "thrifty-student.json"  # how a derived student was made


def pack_sequences(tokenizer, texts: list[str], seq_len: int, limit: int,
                   prefix: list[int] | tuple = ()) -> list[list[int]]:
    """Documents joined by end-of-sequence tokens and cut into full sequences of seq_len, each
    starting with the model's prefix (its BOS where the tokenizer adds one; core/token_prefix)."""
    ids: list[int] = []
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    room = seq_len - len(prefix)
    sequences: list[list[int]] = []
    for text in texts:
        ids.extend(without_prefix(tokenizer(text, add_special_tokens=False)["input_ids"], prefix)
                   + separator)
        while len(ids) >= room and len(sequences) < limit:
            sequences.append(list(prefix) + ids[:room])
            ids = ids[room:]
        if len(sequences) >= limit:
            break
    return sequences


def choose_layers(importance: list[float] | None, layers_count: int, keep: int) -> list[int]:
    """Indices of the layers to keep: the most important ones, or evenly spaced with the first
    and last always kept when no importance is given."""
    if not 1 <= keep < layers_count:
        raise BadInput(f"--keep-layers must be between 1 and {layers_count - 1}: the teacher has "
                       f"{layers_count} layers and a derived student keeps fewer.")
    if importance is not None:
        ranked = sorted(range(layers_count), key=lambda i: importance[i], reverse=True)
        return sorted(ranked[:keep])
    if keep == 1:
        return [0]
    step = (layers_count - 1) / (keep - 1)
    return sorted({round(i * step) for i in range(keep)})


def _training_sequences(params: dict) -> list[list[int]]:
    from thrifty.libs import hf

    tokenizer = hf.load_tokenizer(params["teacher_path"])
    records = corpora.read_records(Path(params["data_path"]))
    texts = [t for t in corpora.record_texts(records, hf.chat_renderer(tokenizer)) if t.strip()]
    sequences = pack_sequences(tokenizer, texts, params["seq_len"], params["sequences"],
                               hf.prefix_ids(tokenizer))
    if not sequences:
        total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        raise BadInput(
            f"The training data {params['data_name']} has {total} tokens, fewer than one "
            f"sequence of --seq-len {params['seq_len']}. Give more text, or a shorter "
            "--seq-len.")
    return sequences


def prepare(params: dict, events: Events) -> dict:
    import torch

    from thrifty.libs import hf

    teacher_path = params["teacher_path"]
    result: dict = {}
    if params.get("student_path"):
        events.status("comparing the tokenizers")
        mismatch = hf.tokenizer_mismatch(teacher_path, params["student_path"])
        if mismatch:
            raise BadInput(
                f"The teacher {params['teacher_name']} and the student {params['student_name']} "
                f"cannot be distilled into one another: {mismatch}. Distillation compares their "
                "next-token distributions token by token, so both must use the same tokenizer. "
                "Pick a student of the teacher's family, or derive one from the teacher with "
                "--student-from-teacher --keep-layers N.")

    signal_dir = Path(params["signal_dir"])
    if not (signal_dir / teacher_signal.TOKENS).is_file():
        events.status("tokenizing the training text")
        teacher_signal.save_tokens(signal_dir, _training_sequences(params))
    tokens = teacher_signal.load_tokens(signal_dir)
    result["sequences_count"] = int(tokens.shape[0])
    result["train_tokens"] = int(tokens.size)

    config = hf.load_config(teacher_path)
    if params.get("keep_layers"):
        layers_count = config.num_hidden_layers
        choose_layers(None, layers_count, params["keep_layers"])  # validates before loading
        student_dir = Path(params["student_init_dir"])
        if not student_dir.is_dir():
            events.status("deriving the student from the teacher")
            model = hf.load_causal_lm(teacher_path, dtype="auto")
            importance = None
            if params["layer_selection"] == "importance":
                sample = torch.tensor(tokens[:IMPORTANCE_SEQUENCES].astype("int64"))
                importance = hf.block_importance(model, sample)
            keep = choose_layers(importance, layers_count, params["keep_layers"])
            with atomic_folder(student_dir) as tmp:
                parameters = hf.save_depth_pruned(model, hf.load_tokenizer(teacher_path), keep,
                                                  str(tmp))
                write_json(tmp / STUDENT_INFO, {
                    "teacher": teacher_path, "kept_layers": keep, "importance": importance,
                    "parameters_params": parameters})
        info = read_json(student_dir / STUDENT_INFO)
        result.update({"kept_layers": info["kept_layers"], "importance": info["importance"],
                       "student_parameters_params": info["parameters_params"],
                       "teacher_layers_count": layers_count})

    if params["offline"] and teacher_signal.read_manifest(signal_dir) is None:
        teacher_signal.write_manifest(signal_dir, teacher_signal.new_manifest(
            teacher={"name": params["teacher_name"], "path": teacher_path},
            top_k=params["top_k"], seq_len=params["seq_len"], sequences=int(tokens.shape[0]),
            shard_size=params["shard_size"], vocab_size=config.vocab_size,
            data={"name": params["data_name"], "path": params["data_path"]}))
    return result
