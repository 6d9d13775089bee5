"""`thrifty distill`: its plan, resume rules, layer choice, data packing and bad input (no
engines; the real runs are in tests/integration/test_distill_real.py)."""

import json
import math

import pytest
from safetensors_files import write_safetensors, write_tokenizer_stub

from thrifty.core.errors import BadInput
from thrifty.distill import plan
from thrifty.distill.prepare import choose_layers, pack_sequences
from thrifty.distill.report import gap_closed_pct, markdown_report, summary
from thrifty.formats import teacher_signal

SETTINGS = {"teacher": "t", "student": None, "keep_layers": 4, "layer_selection": "even",
            "data": "enwiki", "seq_len": 64, "steps": 10, "batch_size": 2, "grad_accum": 3,
            "learning_rate": 1e-4, "warmup_steps": 1, "lora": False, "lora_rank": 16,
            "loss": "fkl", "beta": 0.5, "temperature": 1.0, "alpha": 0.5,
            "teacher_signal": "offline", "top_k": 20, "world_size": 2, "seed": 0,
            "accelerate_config": None}


def test_layers_kept_by_importance_stay_in_model_order():
    importance = [0.9, 0.1, 0.5, 0.05, 0.3, 0.8]
    assert choose_layers(importance, 6, 3) == [0, 2, 5]


def test_evenly_spaced_layers_keep_the_first_and_the_last():
    kept = choose_layers(None, 30, 15)
    assert len(kept) == 15 and kept[0] == 0 and kept[-1] == 29 and kept == sorted(set(kept))
    assert choose_layers(None, 30, 1) == [0]
    assert choose_layers(None, 5, 3) == [0, 2, 4]


@pytest.mark.parametrize("keep", [0, 30, 31])
def test_a_derived_student_must_keep_fewer_layers_than_the_teacher(keep):
    with pytest.raises(BadInput, match="between 1 and 29"):
        choose_layers(None, 30, keep)


class WordTokenizer:
    """One token per word: enough to check how documents are packed."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [len(word) for word in text.split()]}


def test_documents_are_packed_into_full_sequences_separated_by_eos():
    texts = ["a bb ccc", "dddd eeeee", "ffffff"]  # 3 + 1 eos + 2 + 1 + 1 + 1 = 9 tokens
    sequences = pack_sequences(WordTokenizer(), texts, seq_len=4, limit=10)
    assert sequences == [[1, 2, 3, 0], [4, 5, 0, 6]]  # the 9th token is no full sequence
    assert pack_sequences(WordTokenizer(), texts, seq_len=4, limit=1) == [[1, 2, 3, 0]]
    assert pack_sequences(WordTokenizer(), ["a b"], seq_len=4, limit=10) == []


def test_each_packed_sequence_starts_with_the_models_prefix():
    texts = ["a bb ccc", "dddd eeeee", "ffffff"]
    sequences = pack_sequences(WordTokenizer(), texts, seq_len=4, limit=10, prefix=[7])
    assert sequences == [[7, 1, 2, 3], [7, 0, 4, 5], [7, 0, 6, 0]]


def test_sequences_needed_cover_every_process_and_micro_batch():
    assert plan.sequences_needed(SETTINGS) == 10 * 2 * 3 * 2


def test_a_new_output_records_its_settings(tmp_path):
    out = tmp_path / "d"
    plan.open_output(out, SETTINGS, resume=False, force=False)
    assert json.loads((out / plan.SETTINGS).read_text()) == SETTINGS


def test_an_unfinished_run_needs_resume_or_force(tmp_path):
    out = tmp_path / "d"
    plan.open_output(out, SETTINGS, resume=False, force=False)
    (out / "signal").mkdir()
    with pytest.raises(BadInput, match="unfinished distillation.*--resume.*--force"):
        plan.open_output(out, SETTINGS, resume=False, force=False)
    plan.open_output(out, SETTINGS, resume=True, force=False)
    assert (out / "signal").is_dir()  # resuming keeps what was done
    plan.open_output(out, SETTINGS, resume=False, force=True)
    assert not (out / "signal").exists()


def test_a_finished_run_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "d"
    plan.open_output(out, SETTINGS, resume=False, force=False)
    (out / "student").mkdir()
    with pytest.raises(BadInput, match="finished distillation.*--force"):
        plan.open_output(out, SETTINGS, resume=False, force=False)


def test_resume_with_other_settings_names_what_changed(tmp_path):
    out = tmp_path / "d"
    plan.open_output(out, SETTINGS, resume=False, force=False)
    changed = {**SETTINGS, "steps": 20, "loss": "rkl"}
    with pytest.raises(BadInput, match=r"steps \(10 then, 20 now\); loss \('fkl' then, 'rkl' now"):
        plan.open_output(out, changed, resume=True, force=False)


def test_a_folder_that_is_no_distillation_is_left_alone(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="not a thrifty distillation"):
        plan.open_output(out, SETTINGS, resume=True, force=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_signal_manifest_shards_and_bytes_per_token():
    manifest = teacher_signal.new_manifest({"name": "t"}, top_k=20, seq_len=65, sequences=10,
                                           shard_size=4, vocab_size=49152, data={})
    assert manifest["id_dtype"] == "uint16"
    assert teacher_signal.shard_ranges(manifest) == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    manifest["shards"]["00001"] = {"sequences": 4, "bytes": 4 * 64 * 80}
    assert [r[0] for r in teacher_signal.pending_shards(manifest)] == [0, 2]
    assert not teacher_signal.is_complete(manifest)
    assert teacher_signal.bytes_per_token(manifest) == 80
    big_vocab = teacher_signal.new_manifest({}, 20, 65, 10, 4, vocab_size=128256, data={})
    assert big_vocab["id_dtype"] == "int32"


def test_gap_closed_is_measured_on_log_perplexity():
    assert gap_closed_pct(1000.0, 1000.0, 10.0) == 0
    assert gap_closed_pct(1000.0, 10.0, 10.0) == 100
    assert math.isclose(gap_closed_pct(1000.0, 100.0, 10.0), 50.0)
    assert gap_closed_pct(10.0, 12.0, 10.0) is None


def test_report_lists_the_three_models_and_the_figures():
    rows = [{"model": name, "perplexity": ppl, "parameters_params": params,
             "vs_base": kld and {"kld_mean": kld, "top1_agreement_pct": top1}}
            for name, ppl, params, kld, top1 in [
                ("teacher", 20.0, 134e6, None, None), ("student before", 2000.0, 80e6, 4.2, 9.5),
                ("student after", 200.0, 80e6, 0.8, 55.0)]]
    result = {"measured": {"train_tokens_per_s": 312.5, "signal_bytes_per_token": 80.5,
                           "eval_tokens": 4096},
              "details": {"settings": SETTINGS, "eval": rows,
                          "train": {"history": [{"step": 1, "loss": 5.0, "ce": 6.0, "kd": 4.0}]}}}
    title, _, table_rows = summary(result)
    assert "312 tokens/s" in title and "80 bytes/token" in title
    assert [r[5] for r in table_rows] == ["100.0%", "0.0%", "50.0%"]
    assert [r[2] for r in table_rows] == ["", "4.200", "0.800"]
    report = markdown_report(result)
    assert "| student after | 200.000 | 0.800 | 55.0% | 80.0M | 50.0% |" in report
    assert "0.5 × fkl (T = 1.0) + 0.5 × cross-entropy" in report


# --- bad input on the command line -------------------------------------------------------


def fake_model(folder, layers: int = 4):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
        "hidden_size": 64, "vocab_size": 128}))
    write_safetensors(folder / "model.safetensors", {"lm_head.weight": ("F32", [128, 64])})
    write_tokenizer_stub(folder)
    return folder


@pytest.mark.parametrize("args, message", [
    ([], "Give the student"),
    (["--student", "s", "--student-from-teacher", "--keep-layers", "2"], "not both"),
    (["--student-from-teacher"], "needs --keep-layers"),
    (["--student", "s", "--keep-layers", "2"], "applies to a student derived"),
    (["--student", "s", "--processes", "2", "--accelerate-config", "pyproject.toml"],
     "drop --processes"),
])
def test_inconsistent_student_options_are_refused(run_cli, isolated_home, tmp_path, args, message):
    result = run_cli("distill", "--teacher", "t", "--out", tmp_path / "d", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "d").exists()


def test_a_derived_student_with_as_many_layers_as_the_teacher_is_refused(run_cli, isolated_home,
                                                                         tmp_path):
    teacher = fake_model(tmp_path / "teacher", layers=4)
    result = run_cli("distill", "--teacher", teacher, "--student-from-teacher", "--keep-layers", 5,
                     "--out", tmp_path / "d")
    assert result.exit_code != 0
    assert "--keep-layers 5 is not fewer than the 4 layers" in result.output
    assert not (tmp_path / "d").exists()


def test_empty_training_data_is_refused_before_anything_is_written(run_cli, isolated_home,
                                                                   tmp_path):
    teacher = fake_model(tmp_path / "teacher")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    result = run_cli("distill", "--teacher", teacher, "--student-from-teacher", "--keep-layers", 2,
                     "--data", empty, "--out", tmp_path / "d")
    assert result.exit_code != 0
    assert "is empty" in result.output
    assert not (tmp_path / "d").exists()


def test_an_existing_unrelated_output_folder_is_not_touched(run_cli, isolated_home, tmp_path):
    teacher = fake_model(tmp_path / "teacher")
    data = tmp_path / "data.txt"
    data.write_text("Some text for training.\n")
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = run_cli("distill", "--teacher", teacher, "--student-from-teacher", "--keep-layers", 2,
                     "--data", data, "--out", out)
    assert result.exit_code != 0
    assert "not a thrifty distillation" in result.output
    assert (out / "keep.txt").read_text() == "x"


def test_training_launchers():
    from thrifty.distill.command import launcher

    assert launcher({**SETTINGS, "world_size": 1}) is None
    assert launcher(SETTINGS) == ["-m", "torch.distributed.run", "--standalone",
                                  "--nproc_per_node", "2"]
    assert launcher({**SETTINGS, "accelerate_config": "/c/fsdp.yaml"}) == [
        "-m", "accelerate.commands.launch", "--config_file", "/c/fsdp.yaml"]


def test_shipped_accelerate_configs_name_their_strategy():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
    texts = {p.name: p.read_text() for p in folder.glob("*.yaml")}
    assert "distributed_type: FSDP" in texts["fsdp.yaml"]
    assert "zero_stage: 3" in texts["deepspeed-zero3.yaml"]
