import json

import pytest
from click.testing import CliRunner

from thrifty.cli import cli
from thrifty.cost import catalog


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A fresh, empty THRIFTY_HOME (fast tests never touch the real engines or caches)."""
    home = tmp_path / "home"
    monkeypatch.setenv("THRIFTY_HOME", str(home))
    monkeypatch.setenv("THRIFTY_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("THRIFTY_DEBUG", raising=False)
    return home


@pytest.fixture
def run_cli():
    """Invoke the thrifty CLI in-process; returns click's Result (exit_code, output)."""

    def invoke(*args: str):
        return CliRunner().invoke(cli, [str(a) for a in args], prog_name="thrifty")

    return invoke


@pytest.fixture
def cat(isolated_home):
    """The shipped GPU catalog, read with an empty THRIFTY_HOME (no user overrides)."""
    return catalog.load()


@pytest.fixture
def model_folder(tmp_path):
    """A model folder that passes thrifty's checks of a local model (config.json, safetensors)
    without weights: enough for everything refused before an engine starts."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder
