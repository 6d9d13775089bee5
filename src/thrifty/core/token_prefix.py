"""The tokens a model sees before any text: its tokenizer's BOS (or other prefix) where the
tokenizer adds one when a request is encoded, nothing where it does not.

vLLM encodes every prompt with the tokenizer's special tokens, so a Llama-3 or Gemma model
always sees its BOS first (and relies on it as an attention sink), while SmolLM2's tokenizer adds
nothing. Evaluation windows, calibration samples, distillation sequences and benchmark prompt
lengths follow the same rule, so that each starts the way a real request does. Library-neutral:
callers pass the ids of one probe text encoded with and without special tokens.
"""

PROBE_TEXT = "The quick brown fox jumps over the lazy dog."


def prefix_ids(with_special: list[int], plain: list[int]) -> list[int]:
    """The ids the tokenizer put before the text's own ids (empty when it put none)."""
    if not plain:
        return []
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return list(with_special[:start])
    return []  # the special tokens changed the text's own split: no prefix is assumed


def without_prefix(ids: list[int], prefix: list[int] | tuple) -> list[int]:
    """A document's ids without a leading copy of the prefix: chat templates (Llama-3's) write
    the BOS into the rendered text, and the prefix is put in front once, not twice."""
    if prefix and list(ids[:len(prefix)]) == list(prefix):
        return list(ids[len(prefix):])
    return list(ids)
