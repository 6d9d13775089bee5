"""docs/design.md's module map matches the source tree (scripts/module_map.py --write)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_design_map_lists_every_module_with_its_docstring():
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts/module_map.py")
    module_map = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module_map)
    design = (ROOT / "docs/design.md").read_text()
    assert module_map.with_map(design) == design, (
        "docs/design.md's module map is out of date: run `.venv/bin/python scripts/module_map.py "
        "--write` and commit it.")
    assert "(no docstring)" not in design, "every module opens with a one-line docstring"
