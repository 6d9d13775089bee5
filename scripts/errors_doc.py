"""Write docs/errors.md from the bad-input battery (tests/bad_inputs.py): each case is run as
the fast tests run it, and its message is quoted as thrifty printed it.

    .venv/bin/python scripts/errors_doc.py
"""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bad_inputs  # noqa: E402  (the battery lives with the tests)


def main() -> None:
    results = []
    for case in bad_inputs.cases():
        with tempfile.TemporaryDirectory() as folder:
            results.append((case, bad_inputs.run(case, Path(folder))))
    (ROOT / "docs" / "errors.md").write_text(bad_inputs.markdown(results))
    print(f"docs/errors.md: {len(results)} inputs")


if __name__ == "__main__":
    main()
