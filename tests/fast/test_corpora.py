"""Corpus files: validation with file and line, chat records, and the enwiki split rule."""

import json

import pytest

from thrifty.assets import corpora
from thrifty.core.errors import BadInput


def test_empty_file(tmp_path, run_cli):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    result = run_cli("corpora", "check", path)
    assert result.exit_code == 1
    assert "is empty" in result.output and str(path) in result.output


def test_malformed_jsonl_names_file_and_line(tmp_path, run_cli):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken}\n')
    result = run_cli("corpora", "check", path)
    assert result.exit_code == 1
    assert f"{path} line 2 is not valid JSON" in " ".join(result.output.split())


def test_jsonl_line_without_text_or_messages(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok"}\n{"prompt": "no"}\n')
    with pytest.raises(BadInput, match="line 2 has neither"):
        corpora.read_records(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('["a list"]\n')
    with pytest.raises(BadInput, match="line 1 is a JSON list"):
        corpora.read_records(path)


def test_text_and_chat_records(tmp_path, run_cli):
    path = tmp_path / "data.jsonl"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path.write_text(json.dumps({"text": "plain"}) + "\n\n" + json.dumps(chat) + "\n")
    records = corpora.read_records(path)
    assert records == [{"text": "plain"}, chat]
    rendered = corpora.record_texts(records, lambda m: "|".join(x["content"] for x in m))
    assert rendered == ["plain", "hi|yo"]
    with pytest.raises(BadInput, match="chat template"):
        corpora.record_texts(records, None)
    result = run_cli("corpora", "check", path, "--json")
    assert json.loads(result.output) == {"file": str(path), "records_count": 2,
                                         "chat_records_count": 1}


def test_txt_documents_split_on_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first doc\nstill first\n\n\nsecond doc\n")
    assert corpora.read_records(path) == [{"text": "first doc\nstill first"},
                                          {"text": "second doc"}]


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(BadInput, match="reads .txt and .jsonl"):
        corpora.read_records(path)


def test_missing_corpus_file(isolated_home):
    with pytest.raises(BadInput, match="neither 'enwiki' nor an existing file"):
        corpora.resolve("/no/such/file.jsonl", "evaluation")


def test_enwiki_split_is_deterministic_and_about_one_in_five():
    titles = [f"Article {i}" for i in range(2000)]
    first = [corpora.split_of(t) for t in titles]
    assert first == [corpora.split_of(t) for t in titles]
    share = first.count("evaluation") / len(first)
    assert 0.15 < share < 0.25
