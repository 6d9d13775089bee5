"""What a benchmark sends: prompts of chosen token lengths cut from real text, or a user's
prompts file, each assigned to the base model or an adapter by a weighted mix. Seeded, so two
runs (or two tools fed the exported file) send exactly the same requests.

The `tokenizers` library is imported here and nowhere else.
"""

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from thrifty.assets import corpora, models, prepare
from thrifty.core import token_prefix
from thrifty.core.errors import BadInput
from thrifty.core.files import json_object_line

BASE = "base"  # the adapter-mix name of the base model


@dataclass
class Prompt:
    text: str
    input_tokens: int | None  # counted by the client's tokenizer (None: not counted)
    output_tokens: int


@dataclass
class LengthSpec:
    """A token length: fixed, uniform(low, high) or normal(mean, std) (clipped to >= 1)."""
    kind: str
    a: int
    b: int = 0

    def draw(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.randint(self.a, self.b)
        return max(1, round(rng.gauss(self.a, self.b)))

    def __str__(self) -> str:
        return str(self.a) if self.kind == "fixed" else f"{self.kind}({self.a},{self.b})"


_LENGTH = re.compile(r"^(?:(\d+)|(uniform|normal)\(\s*(\d+)\s*,\s*(\d+)\s*\))$")


def parse_length(text: str, option: str) -> LengthSpec:
    match = _LENGTH.match(text.strip().replace(" ", ""))
    if not match:
        raise BadInput(f"{option} {text!r} is not a token length. Write a number (128), "
                       "uniform(LOW,HIGH) or normal(MEAN,STD), for example "
                       f"{option} 'uniform(64,256)'.")
    if match.group(1):
        spec = LengthSpec("fixed", int(match.group(1)))
    else:
        spec = LengthSpec(match.group(2), int(match.group(3)), int(match.group(4)))
    if spec.a < 1 or (spec.kind == "uniform" and spec.b < spec.a):
        raise BadInput(f"{option} {text!r}: lengths must be at least 1 token"
                       + (" and HIGH must not be below LOW." if spec.kind == "uniform" else "."))
    return spec


# --- tokenizers -------------------------------------------------------------------------

def load_tokenizer(ref: str):
    """A tokenizer from a folder holding tokenizer.json, the file itself, or a built-in model
    name (prepared on first use)."""
    from tokenizers import Tokenizer

    path = Path(ref).expanduser()
    if ref in models.builtin_models():
        path = Path(prepare.ensure_model(ref).path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise BadInput(f"No tokenizer at {ref!r}: synthetic prompts need the model's "
                       "tokenizer.json to cut prompts to exact token lengths. Pass --tokenizer "
                       "with a folder holding tokenizer.json (or a built-in model name), or "
                       "send your own prompts with --prompts FILE.")
    return Tokenizer.from_file(str(path))


# --- synthetic prompts from the corpus ----------------------------------------------------

def corpus_token_ids(tokenizer) -> list[int]:
    """The enwiki corpus (both splits) as one token stream, article by article."""
    prepare.ensure_corpus(corpora.ENWIKI, "evaluation")
    texts = [text for split in corpora.SPLITS
             for text in corpora.enwiki_articles(split).values()]
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(encoding.ids)
    return ids


def cut_prompt(tokenizer, stream: list[int], start: int, length: int) -> tuple[str, int]:
    """Text of about `length` tokens from `stream` at `start`. Decoding and re-encoding can
    merge tokens at the edges, so the window is widened until the re-encoded text has at
    least `length` tokens, then trimmed; returns the text and its real token count."""
    text, count = "", 0
    for extra in range(0, 16):
        text = tokenizer.decode(stream[start:start + length + extra])
        count = len(tokenizer.encode(text, add_special_tokens=False).ids)
        if count >= length:
            break
    if count > length:  # trim whole tokens off the end of the re-encoded text
        ids = tokenizer.encode(text, add_special_tokens=False).ids[:length]
        text = tokenizer.decode(ids)
        count = len(tokenizer.encode(text, add_special_tokens=False).ids)
    return text, count


def prefix_length(tokenizer) -> int:
    """Tokens the server puts before each prompt's text (its BOS where the tokenizer adds one):
    a prompt of --input-tokens N holds N minus these, so that the server sees N."""
    return len(token_prefix.prefix_ids(tokenizer.encode(token_prefix.PROBE_TEXT).ids,
                                       tokenizer.encode(token_prefix.PROBE_TEXT,
                                                        add_special_tokens=False).ids))


def synthetic_prompts(tokenizer, count: int, input_len: LengthSpec, output_len: LengthSpec,
                      seed: int) -> list[Prompt]:
    stream = corpus_token_ids(tokenizer)
    prefix = prefix_length(tokenizer)
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        length = input_len.draw(rng)
        if length + 16 >= len(stream):
            raise BadInput(f"An input length of {length} tokens is longer than the whole "
                           f"corpus ({len(stream)} tokens); choose a shorter --input-tokens.")
        start = rng.randrange(0, len(stream) - length - 16)
        text, real = cut_prompt(tokenizer, stream, start, max(1, length - prefix))
        prompts.append(Prompt(text, real + prefix, output_len.draw(rng)))
    return prompts


# --- a user's prompts ---------------------------------------------------------------------

def read_prompts_file(path: str, default_output: LengthSpec, seed: int) -> list[Prompt]:
    """JSON Lines with {"prompt": "...", "output_tokens": N} per line (output_tokens optional:
    drawn from --output-tokens) -- the format `vllm bench serve --dataset-name custom` reads
    -- or a .txt file with one prompt per paragraph."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BadInput(f"The prompts file {file} does not exist. Give a .jsonl file with one "
                       "{\"prompt\": \"...\"} object per line, or a .txt file.")
    rng = random.Random(seed)
    raw = file.read_text(encoding="utf-8")
    prompts = []
    if file.suffix == ".jsonl":
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            obj = json_object_line(f"{file} line {number}", line,
                                   "Each line must be an object such as {\"prompt\": \"...\", "
                                   "\"output_tokens\": 64}.")
            text, out = obj.get("prompt"), obj.get("output_tokens")
            if not isinstance(text, str) or not text:
                raise BadInput(f"{file} line {number} has no \"prompt\" string.")
            if out is not None and (not isinstance(out, int) or out < 1):
                raise BadInput(f"{file} line {number}: \"output_tokens\" must be a positive "
                               "integer.")
            prompts.append(Prompt(text, None, out or default_output.draw(rng)))
    else:
        prompts = [Prompt(p.strip(), None, default_output.draw(rng))
                   for p in raw.split("\n\n") if p.strip()]
    if not prompts:
        raise BadInput(f"The prompts file {file} holds no prompts.")
    return prompts


def write_prompts_file(prompts: list[Prompt], path: Path) -> None:
    """Export in the format `read_prompts_file` and `vllm bench serve` (custom) read."""
    with Path(path).open("w", encoding="utf-8") as out:
        for p in prompts:
            out.write(json.dumps({"prompt": p.text, "output_tokens": p.output_tokens}) + "\n")


# --- adapter mix ----------------------------------------------------------------------------

_MIX_ITEM = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_adapter_mix(text: str) -> dict[str, float]:
    """'a=0.5,b=0.3,base=0.2' -> weights normalised to sum to 1 ('base' is the base model)."""
    weights: dict[str, float] = {}
    for item in text.split(","):
        match = _MIX_ITEM.match(item)
        if not match:
            raise BadInput(f"--adapter-mix {text!r}: {item.strip()!r} is not NAME=WEIGHT. "
                           "Write for example --adapter-mix support=0.5,legal=0.3,base=0.2 "
                           "(base is the model without an adapter).")
        name, weight = match.group(1), float(match.group(2))
        if name in weights:
            raise BadInput(f"--adapter-mix {text!r}: {name!r} is given twice.")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise BadInput(f"--adapter-mix {text!r}: the weights add up to zero; give at least one "
                       "positive weight.")
    return {name: w / total for name, w in weights.items()}


def assign_adapters(count: int, mix: dict[str, float], seed: int) -> list[str]:
    """A seeded weighted draw of `count` adapter names from the mix."""
    rng = random.Random(seed + 1)
    names = list(mix)
    return rng.choices(names, weights=[mix[n] for n in names], k=count)


def check_mix_served(mix: dict[str, float], served: list[str], loadable: list[str],
                     url: str) -> None:
    """Every adapter in the mix must be one the server lists (or can load on first use)."""
    missing = [n for n in mix if n != BASE and n not in served and n not in loadable]
    if missing:
        have = [n for n in served[1:]] + loadable
        raise BadInput(f"--adapter-mix names {', '.join(repr(m) for m in missing)}, which the "
                       f"server at {url} does not serve. It serves "
                       f"{', '.join(have) if have else 'no adapters'} (and the base as "
                       f"'{BASE}'). Load the adapter first (`thrifty adapters load NAME PATH`), "
                       "start the run with --adapter NAME=PATH, or fix the name.")
