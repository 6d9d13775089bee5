"""The bad-input battery (tests/bad_inputs.py): each input is refused before work starts with
one paragraph and nothing written, and docs/errors.md is exactly what these runs say."""

from pathlib import Path

import pytest
from bad_inputs import cases, markdown, run

CASES = cases()
ERRORS_DOC = Path(__file__).parents[2] / "docs" / "errors.md"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    return [run(case, tmp_path_factory.mktemp("case")) for case in CASES]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.what for c in CASES])
def test_refused_before_any_work_in_one_paragraph(results, index):
    case, result = CASES[index], results[index]
    assert result["exit_code"] != 0, result
    assert result["message"].startswith("Error: ") and result["message"].count("Error:") == 1
    assert "Traceback" not in result["message"]
    assert case.phrase in result["message"], result["message"]
    assert result["written"] == []  # no output, no half-written file


def test_the_battery_covers_thirty_inputs_or_more():
    assert len({(case.command, case.what) for case in CASES}) >= 30


def test_docs_errors_md_lists_what_thrifty_says(results):
    expected = markdown(list(zip(CASES, results, strict=True)))
    assert ERRORS_DOC.read_text() == expected, "regenerate it: python scripts/errors_doc.py"
