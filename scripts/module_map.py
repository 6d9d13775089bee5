"""Print thrifty's module map (one line per module: its path and the first line of its
docstring), or with --write put it into docs/design.md between its map markers.

tests/fast/test_design_map.py fails when docs/design.md's map differs from the source tree.
"""

import ast
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "thrifty"
DESIGN = ROOT / "docs" / "design.md"
BEGIN = "<!-- module map: begin (scripts/module_map.py --write) -->"
END = "<!-- module map: end -->"


def first_line(path: Path) -> str:
    """The docstring's first sentence (its first paragraph up to a full stop)."""
    doc = (ast.get_docstring(ast.parse(path.read_text())) or "").strip()
    if not doc:
        return "(no docstring)"
    paragraph = " ".join(doc.split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0].rstrip(".")
    return sentence if sentence.endswith(":") is False else sentence.rstrip(":")


def entry(name: str, text: str) -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent=name.ljust(26),
                         subsequent_indent=" " * 26)


def module_map() -> str:
    lines = ["```"]
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and relative.parent != Path("."):
            lines += entry(f"{relative.parent}/", first_line(path))
        elif relative.name != "__init__.py":
            indent = "  " if relative.parent != Path(".") else ""
            lines += entry(f"{indent}{relative.name}", first_line(path))
    lines.append("```")
    return "\n".join(lines)


def with_map(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{module_map()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DESIGN.write_text(with_map(DESIGN.read_text()))
    else:
        print(module_map())
