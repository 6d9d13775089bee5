"""A bare llm-compressor GPTQ script: the baseline that `thrifty quantize` is timed against.

Same model, calibration tokens and recipe as `thrifty quantize --method gptq`, with nothing
else: no engine process management, preflight, progress events, manifest or run record.
Run with the compress engine's python:
    python bare_llmcompressor_gptq.py MODEL_DIR CALIB_JSONL OUT_DIR NUM_SAMPLES SEQ_LEN GROUP
"""

import json
import random
import sys

from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import GPTQModifier
from transformers import AutoModelForCausalLM, AutoTokenizer


def samples(tokenizer, path, num_samples, seq_len):
    per_doc = []
    with open(path) as f:
        lines = f.readlines()
    for line in lines:
        ids = tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
        per_doc.append([c for c in (ids[i:i + seq_len] for i in range(0, len(ids), seq_len))
                        if len(c) >= min(seq_len, 16)])
    random.Random(0).shuffle(per_doc)
    out, depth = [], 0
    while len(out) < num_samples and any(len(d) > depth for d in per_doc):
        out.extend(d[depth] for d in per_doc if len(d) > depth)
        depth += 1
    return out[:num_samples]


if __name__ == "__main__":
    model_dir, calib, out_dir, num_samples, seq_len, group = sys.argv[1:7]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    ids = samples(tokenizer, calib, int(num_samples), int(seq_len))
    dataset = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(s) for s in ids]})
    scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=int(group),
        actorder="static"))
    recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"],
                          actorder="static", dampening_frac=0.01, block_size=128)
    oneshot(model=model, dataset=dataset, recipe=recipe, num_calibration_samples=len(ids),
            max_seq_length=int(seq_len), shuffle_calibration_samples=False)
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
