import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors_files import make_model_folder

from thrifty.cli import cli
from thrifty.core import tracking
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
    return make_model_folder(tmp_path / "model")


MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a SQLite store; its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with (folder / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while tracking.answers(uri, timeout_s=1):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
        server.terminate()
        server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)
