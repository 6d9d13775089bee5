"""The CLI shell: lazy loading, help, did-you-mean, error paragraphs, --debug."""

import json
import subprocess
import sys

import pytest

from thrifty.cli import COMMANDS, cli
from thrifty.core.errors import BadInput


def all_command_paths():
    """Every command and subcommand, as argument lists (e.g. ['models', 'list'])."""
    import click

    paths = []
    for name in COMMANDS:
        command = cli.get_command(None, name)
        paths.append([name])
        if isinstance(command, click.Group):
            paths.extend([name, sub] for sub in command.commands)
    return paths


def test_help_lists_every_command_and_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from thrifty.cli import cli\n"
        f"paths = {json.dumps(all_command_paths())}\n"
        "runner = CliRunner()\n"
        "out = runner.invoke(cli, ['--help']).output\n"
        "codes = [runner.invoke(cli, [*p, '--help']).exit_code for p in paths]\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'llmcompressor', 'numpy')"
        " if m in sys.modules]\n"
        "print(json.dumps({'out': out, 'codes': codes, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["heavy"] == []
    assert set(report["codes"]) == {0}
    for name in COMMANDS:
        assert name in report["out"]


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_every_subcommand_has_help(run_cli, path):
    result = run_cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_unknown_command_suggests_the_closest(run_cli):
    result = run_cli("evl")
    assert result.exit_code == 2
    assert "No such command 'evl'" in result.output
    assert "Did you mean 'eval'" in result.output


def test_unknown_command_without_near_match(run_cli):
    result = run_cli("frobnicate")
    assert result.exit_code == 2
    assert "Did you mean" not in result.output
    assert "thrifty --help" in result.output


def test_unknown_option(run_cli):
    result = run_cli("eval", "smollm2-135m", "--max-tokenz", "10")
    assert result.exit_code == 2
    assert "No such option '--max-tokenz'" in result.output
    assert "Did you mean '--max-tokens'" in result.output


def test_user_error_is_one_paragraph_without_traceback(isolated_home, run_cli):
    result = run_cli("eval", "/no/such/model")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output
    assert "not an existing folder" in result.output


def test_debug_flag_shows_the_exception(isolated_home, run_cli):
    result = run_cli("--debug", "eval", "/no/such/model")
    assert result.exit_code == 1
    assert isinstance(result.exception, BadInput)


def test_console_script_exit_code_and_stderr(isolated_home, tmp_path):
    done = subprocess.run([sys.executable, "-m", "thrifty", "eval", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ")
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_version(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0
    assert "thrifty" in result.output
