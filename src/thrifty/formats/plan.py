"""The plan: `plan.json` in a `thrifty plan` folder, the decision and everything behind it.

`thrifty plan` writes it (plan/report.py); `thrifty deploy render` reads it with `load` to
write the manifests of its recommendation. Kind `thrifty.plan`, version 1.
"""

from pathlib import Path

from thrifty.core.errors import BadInput
from thrifty.core.files import read_json

KIND, VERSION = "thrifty.plan", 1


def load(ref: str | Path) -> dict:
    """A plan from its folder or its plan.json."""
    path = Path(ref).expanduser()
    if path.is_dir():
        path = path / "plan.json"
    if not path.is_file():
        raise BadInput(f"{ref} is neither a `thrifty plan` folder nor a plan.json file. Give "
                       "the folder `thrifty plan --out` wrote.")
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc}); rerun `thrifty plan ... --resume` "
                       "to write it again.") from None
    if not isinstance(data, dict) or data.get("schema") != KIND:
        raise BadInput(f"{path} is not a thrifty plan (its schema is "
                       f"{data.get('schema') if isinstance(data, dict) else None!r}).")
    if data.get("schema_version", 0) > VERSION:
        raise BadInput(f"{path} was written by a newer thrifty (plan schema version "
                       f"{data['schema_version']}; this one reads up to {VERSION}). Upgrade "
                       "thrifty to read it.")
    return data
