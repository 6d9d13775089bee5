"""Text corpora for calibration and evaluation.

The built-in `enwiki` corpus is the ~100 English Wikipedia articles shipped inside gensim,
extracted once (in the compress engine) into plain JSONL and split by article into a
`calibration` and an `evaluation` part. The split hashes each article's title, so it never
depends on file order and the two parts never share an article.

Users give their own `.txt` (documents separated by blank lines) or `.jsonl` (one object per
line with a `text` string, or chat `messages` rendered with the model's chat template).
"""

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from thrifty.core import paths
from thrifty.core.errors import BadInput
from thrifty.core.files import json_object_line

ENWIKI = "enwiki"
SPLITS = ("calibration", "evaluation")
EVALUATION_SHARE = 5  # one article in five goes to evaluation
MIN_ARTICLE_CHARS = 500  # shorter pages are redirects and stubs
ENWIKI_FILE = ("gensim/test/test_data/"
               "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


def split_of(title: str) -> str:
    digest = int(hashlib.sha256(title.encode()).hexdigest(), 16)
    return "evaluation" if digest % EVALUATION_SHARE == 0 else "calibration"


def enwiki_dir() -> Path:
    return paths.corpora_dir() / ENWIKI


def enwiki_ready() -> bool:
    return (enwiki_dir() / "meta.json").is_file()


def resolve(spec: str, split: str) -> Path:
    """The JSONL/TXT file behind a corpus spec: `enwiki` (one split of it) or a user file."""
    if split not in SPLITS:
        raise ValueError(split)
    if spec == ENWIKI:
        if not enwiki_ready():
            raise BadInput("The enwiki corpus is not prepared yet: run `thrifty corpora prepare`.")
        return enwiki_dir() / f"{split}.jsonl"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise BadInput(f"The corpus {spec!r} is neither {ENWIKI!r} nor an existing file. Give a "
                       ".txt file (documents separated by blank lines) or a .jsonl file.")
    read_records(path)  # validate now, before any long job starts
    return path.resolve()


def enwiki_articles(split: str) -> dict[str, str]:
    """title -> text for one split of the prepared enwiki corpus."""
    lines = resolve(ENWIKI, split).read_text(encoding="utf-8").splitlines()
    return {record["title"]: record["text"] for record in map(json.loads, lines)}


def read_records(path: Path) -> list[dict]:
    """Read and validate a corpus file into records with either `text` or `messages`."""
    path = Path(path)
    raw = path.read_text(encoding="utf-8", errors="strict") if path.is_file() else ""
    if not raw.strip():
        raise BadInput(f"The corpus file {path} is empty; give a file with some text in it.")
    if path.suffix == ".jsonl":
        return [_parse_jsonl_line(path, n, line)
                for n, line in enumerate(raw.splitlines(), start=1) if line.strip()]
    if path.suffix in (".txt", ".md", ""):
        return [{"text": doc.strip()} for doc in raw.split("\n\n") if doc.strip()]
    raise BadInput(f"The corpus file {path} has suffix {path.suffix!r}; thrifty reads .txt "
                   "and .jsonl files.")


def _parse_jsonl_line(path: Path, number: int, line: str) -> dict:
    where = f"{path} line {number}"
    obj = json_object_line(where, line, "Each line must be one JSON object with a \"text\" "
                                        "or \"messages\" field, such as {\"text\": \"...\"}.")
    if isinstance(obj.get("text"), str):
        return {"text": obj["text"]}
    messages = obj.get("messages")
    if isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    raise BadInput(f"{where} has neither a \"text\" string nor a \"messages\" list of "
                   "{\"role\": ..., \"content\": ...} objects.")


def record_texts(records: list[dict], render_chat: Callable[[list[dict]], str] | None) -> list[str]:
    """Plain texts of the records; chat records are rendered by the model's chat template."""
    texts = []
    for record in records:
        if "text" in record:
            texts.append(record["text"])
        elif render_chat is None:
            raise BadInput("This corpus has chat `messages`, which need a model chat template.")
        else:
            texts.append(render_chat(record["messages"]))
    return texts


def extract_enwiki(out_dir: Path) -> dict:
    """Extract gensim's Wikipedia sample into <out_dir>/{calibration,evaluation}.jsonl.

    Runs inside the compress engine (it needs gensim).
    """
    import bz2
    import importlib.util

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    gensim_root = Path(importlib.util.find_spec("gensim").origin).parent.parent
    source = gensim_root / ENWIKI_FILE
    counts = {s: {"articles": 0, "chars": 0} for s in SPLITS}
    outputs = {s: (out_dir / f"{s}.jsonl").open("w") for s in SPLITS}
    try:
        with bz2.open(source, "rb") as f:
            for title, markup, _pageid in extract_pages(f):
                text = _clean(filter_wiki(markup))
                if len(text) < MIN_ARTICLE_CHARS:
                    continue
                split = split_of(title)
                outputs[split].write(json.dumps({"title": title, "text": text}) + "\n")
                counts[split]["articles"] += 1
                counts[split]["chars"] += len(text)
    finally:
        for f in outputs.values():
            f.close()
    return {"source": str(source), "license": "CC BY-SA (Wikipedia)", "splits": counts}


def _clean(text: str) -> str:
    """Drop the bold/italic apostrophe runs and stray whitespace left by filter_wiki."""
    text = re.sub(r"'{2,}", "", text)
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)
