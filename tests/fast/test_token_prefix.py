"""The prefix rule (core/token_prefix.py) on real tokenizers built with the tokenizers library."""

from tokenizers import Tokenizer, models, pre_tokenizers, processors

from thrifty.benchmark import workload
from thrifty.compress.quantize import calibration_samples
from thrifty.core.token_prefix import PROBE_TEXT, prefix_ids, without_prefix

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


def test_a_document_that_already_starts_with_the_prefix_keeps_one_copy():
    # chat templates such as Llama-3's write the BOS into the rendered text
    assert without_prefix([1, 5, 6], [1]) == [5, 6]
    assert without_prefix([5, 6], [1]) == [5, 6]
    assert without_prefix([1, 5], []) == [1, 5]
    texts = ["\x01" + "A" * 100]  # one token per character; chr(1) plays the BOS
    samples = calibration_samples(CharTokenizer(), texts, num_samples=2, seq_len=40, prefix=[1])
    assert samples[0][:2] == [1, 65]


class CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}
