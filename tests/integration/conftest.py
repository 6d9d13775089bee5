"""Integration tier: the real engines, the real SmolLM2-135M and the real enwiki corpus.

These tests use the thrifty home that `make test-integration` prepared (engines, model,
corpus); run records go to a temporary folder.
"""

import pytest

from thrifty.assets import corpora, models
from thrifty.core import engines

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("THRIFTY_RUNS", str(tmp_path / "runs"))
    missing = [n for n in engines.ENGINES if engines.status(n)["state"] != "ready"]
    if missing or not models.is_prepared(models.DEFAULT_MODEL) or not corpora.enwiki_ready():
        pytest.fail("The integration tier needs the engines, the default model and the enwiki "
                    "corpus: run `make test-integration`, which prepares them first.")
