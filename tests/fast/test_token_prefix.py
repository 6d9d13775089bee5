"""The prefix rule (core/token_prefix.py) on real tokenizers built with the tokenizers library."""

from tokenizers import Tokenizer, models, pre_tokenizers, processors

from thrifty.benchmark import workload
from thrifty.core.token_prefix import PROBE_TEXT, prefix_ids

WORDS = sorted(set(PROBE_TEXT.replace(".", " .").split()))


def word_tokenizer(template: str | None) -> Tokenizer:
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<s>", 1), ("</s>", 2)])
    return tokenizer


def ids(tokenizer: Tokenizer, special: bool) -> list[int]:
    return tokenizer.encode(PROBE_TEXT, add_special_tokens=special).ids


def test_the_bos_a_tokenizer_adds_is_the_prefix():
    tokenizer = word_tokenizer("<s> $A")
    assert prefix_ids(ids(tokenizer, True), ids(tokenizer, False)) == [1]
    assert workload.prefix_length(tokenizer) == 1


def test_a_tokenizer_that_adds_nothing_or_only_an_eos_has_no_prefix():
    for tokenizer in (word_tokenizer(None), word_tokenizer("$A </s>")):
        assert prefix_ids(ids(tokenizer, True), ids(tokenizer, False)) == []
        assert workload.prefix_length(tokenizer) == 0


def test_no_prefix_is_assumed_when_special_tokens_change_the_split():
    assert prefix_ids([5, 6, 7], [5, 8]) == []
    assert prefix_ids([9], []) == []
