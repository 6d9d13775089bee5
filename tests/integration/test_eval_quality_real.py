"""`thrifty eval`'s token streams and quality measures, on the real engines: the prefix (BOS)
placement against lm-evaluation-harness, perplexity against lm-eval's rolling log-likelihood on
the real SmolLM2, and KL divergence / top-1 agreement against a direct float32 computation."""

import json
import math
import subprocess
from pathlib import Path

import pytest
from cli_helpers import thrifty, thrifty_json

from thrifty.assets import corpora, models
from thrifty.core import engines
from thrifty.core.jobs import engine_pythonpath

BASE = models.DEFAULT_MODEL


def engine_python(script: str, *args: str) -> dict:
    done = subprocess.run([engines.python_for("compress"), "-c", script, *map(str, args)],
                          capture_output=True, text=True, timeout=900,
                          env={"PYTHONPATH": engine_pythonpath(), "PATH": "/usr/bin:/bin",
                               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# A tiny Llama whose tokenizer adds a BOS (as Llama-3's and Gemma's do), saved as a local model.
TINY_BOS_MODEL = """
import json, sys, torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
words = sorted(set(open(sys.argv[2]).read().split()))[:200]
vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                               unk_token="[UNK]")
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512, bos_token_id=1, eos_token_id=2))
model.save_pretrained(sys.argv[1]); fast.save_pretrained(sys.argv[1])
print(json.dumps({"vocab": len(vocab)}))
"""

# thrifty's windows against lm-eval's own rolling windows, and a direct computation.
WINDOWS_CHECK = """
import json, math, sys, torch
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from thrifty.compress.perplexity import evaluation_tokens, perplexity
from thrifty.compress.windows import plan_windows
from thrifty.libs import hf
tokenizer, model = hf.load_tokenizer(sys.argv[1]), hf.load_causal_lm(sys.argv[1])
prefix = hf.prefix_ids(tokenizer)
ids = evaluation_tokens(tokenizer, [open(sys.argv[2]).read()], 300)
ours = [(w.input_ids(prefix, ids), ids[w.targets_start:w.targets_end])
        for w in plan_windows(len(ids), len(prefix), 64, None)]
theirs = [(c + t[:-1], t) for c, t in map(make_disjoint_window,
          get_rolling_token_windows(ids, prefix[0], 64, 1))]
one = perplexity(model, prefix, ids[:63], 64)
with torch.no_grad():
    x = torch.tensor([prefix + ids[:63]])
    direct = math.exp(model(x, labels=x).loss.item())
print(json.dumps({"prefix": prefix, "windows": len(ours), "first_window": ours[0] == theirs[0],
                  "every_input_starts_with_prefix": all(i[:1] == prefix for i, _ in ours),
                  "full_inputs": all(len(i) == 64 for i, _ in ours),
                  "targets": [t for _, ts in ours for t in ts] == ids,
                  "one": one["perplexity"], "one_scored": one["scored_tokens"],
                  "direct": direct}))
"""


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """About 3,000 tokens of real Wikipedia text as one document."""
    texts = list(corpora.enwiki_articles("evaluation").values())
    path = tmp_path_factory.mktemp("text") / "doc.jsonl"
    path.write_text(json.dumps({"text": "\n\n".join(texts)[:14000]}) + "\n")
    return path


def test_windows_start_with_the_bos_a_tokenizer_adds_as_lm_eval_places_it(tmp_path, text_file):
    folder = tmp_path / "tiny-bos"
    raw = tmp_path / "raw.txt"
    raw.write_text(json.loads(text_file.read_text())["text"])
    engine_python(TINY_BOS_MODEL, folder, raw)
    r = engine_python(WINDOWS_CHECK, folder, raw)
    assert r["prefix"] == [1]
    assert r["every_input_starts_with_prefix"] and r["targets"]  # each text token scored once
    assert r["windows"] >= 4 and r["full_inputs"]
    # The first window is lm-eval's own; lm-eval then continues mid-text without the BOS, which
    # no request does, so thrifty's later windows start with it again (docs/evaluation.md).
    assert r["first_window"]
    assert r["one_scored"] == 63  # the first text token is scored, from the BOS
    assert r["one"] == pytest.approx(r["direct"], rel=1e-4)
    row = thrifty_json("eval", folder, "--corpus", text_file, "--max-tokens", "300",
                       "--window", "64")["rows"][0]
    assert row["prefix_ids"] == [1] and row["scored_tokens"] == row["eval_tokens"] == 300


LM_EVAL_ROLLING = """
import json, sys
from thrifty.libs import lm_eval
r = lm_eval.rolling_loglikelihood(sys.argv[1], json.loads(open(sys.argv[2]).read())["text"]
                                  + "\\n\\n", int(sys.argv[3]))
print(json.dumps(r))
"""


def test_perplexity_agrees_with_lm_eval_rolling_loglikelihood_on_smollm2(text_file):
    ours = thrifty_json("eval", BASE, "--corpus", text_file, "--max-tokens", "100000",
                        "--window", "1024")["rows"][0]
    theirs = engine_python(LM_EVAL_ROLLING, models.prepared_dir(BASE), text_file, 1024)
    assert ours["eval_tokens"] == theirs["tokens"] > 2048  # the same text, several windows
    lm_eval_ppl = math.exp(-theirs["loglikelihood"] / theirs["tokens"])
    # SmolLM2's tokenizer adds no BOS, so thrifty scores from the second token on while lm-eval
    # puts its prefix token first and scores the first too; the windows are otherwise the same.
    assert ours["perplexity"] == pytest.approx(lm_eval_ppl, rel=0.005)


FLOAT32_KLD = """
import json, sys, torch
from thrifty.assets import corpora
from thrifty.compress.perplexity import evaluation_tokens, window_log_probs
from thrifty.compress.windows import plan_windows
from thrifty.libs import hf
tokenizer = hf.load_tokenizer(sys.argv[1])
texts = corpora.record_texts(corpora.read_records(corpora.resolve("enwiki", "evaluation")), None)
ids = evaluation_tokens(tokenizer, texts, 1024)
windows = plan_windows(len(ids), 0, 512, None)
base = [lp for _, lp, _ in window_log_probs(hf.load_causal_lm(sys.argv[1]), [], ids, windows)]
cand = [lp for _, lp, _ in window_log_probs(hf.load_causal_lm(sys.argv[2]), [], ids, windows)]
kl = torch.cat([(b.double().exp() * (b.double() - c.double())).sum(-1) for b, c in zip(base, cand)])
same = torch.cat([b.argmax(-1) == c.argmax(-1) for b, c in zip(base, cand)]).double()
print(json.dumps({"kld_mean": kl.mean().item(), "top1_pct": 100 * same.mean().item()}))
"""


def test_kl_divergence_and_top1_agreement_of_a_4bit_model(tmp_path):
    rtn = tmp_path / "rtn-w4"
    thrifty_json("quantize", BASE, "--method", "rtn", "--out", rtn, "--no-verify")
    result = thrifty_json("eval", BASE, BASE, rtn, "--label", "base", "--label", "same",
                          "--label", "rtn", "--max-tokens", "1024", "--window", "512")
    base, same, quantized = result["rows"]
    assert same["vs_base"]["kld_mean"] < 1e-5 and same["vs_base"]["top1_agreement_pct"] == 100
    assert same["vs_base"]["delta_log_ppl_within_noise"]
    vs = quantized["vs_base"]
    assert vs["kld_mean_ci95"][0] > 0.01 and not vs["delta_log_ppl_within_noise"]
    assert vs["kld_mean_ci95"][0] <= vs["kld_mean"] <= vs["kld_mean_ci95"][1]
    assert vs["kld_p90"] <= vs["kld_p99"]
    assert 30 < vs["top1_agreement_pct"] < 100
    assert vs["delta_log_ppl"] == pytest.approx(
        math.log(quantized["perplexity"]) - math.log(base["perplexity"]), rel=1e-6)
    direct = engine_python(FLOAT32_KLD, models.prepared_dir(BASE), rtn)
    # the base's log-probabilities are kept in float16 on disk between the two models
    assert vs["kld_mean"] == pytest.approx(direct["kld_mean"], rel=1e-3)
    assert vs["top1_agreement_pct"] == pytest.approx(direct["top1_pct"], abs=0.2)
    assert not list(Path(result["run"]).glob("*.npy"))  # no leftover


def test_a_candidate_with_another_vocabulary_gets_perplexity_but_no_kld(tmp_path, text_file):
    folder = tmp_path / "tiny-bos"
    raw = tmp_path / "raw.txt"
    raw.write_text(json.loads(text_file.read_text())["text"])
    engine_python(TINY_BOS_MODEL, folder, raw)
    done = thrifty("eval", BASE, folder, "--max-tokens", "256")
    assert done.returncode == 0
    assert "No KL divergence for tiny-bos: the vocabularies differ" in done.stdout
    rows = thrifty_json("eval", BASE, folder, "--max-tokens", "256")["rows"]
    assert rows[1]["vs_base"] is None and rows[1]["perplexity"] > 1


STATISTICS = """
import json, numpy as np
from thrifty.compress import quality
def scores(nll, kld=None, agree=None):
    s = quality.TokenScores(nll=[np.asarray(nll, float)])
    if kld is not None:
        s.kld, s.top1_agree = [np.asarray(kld, float)], [np.asarray(agree, bool)]
    return s
rng = np.random.default_rng(1)
n = 4096
base = scores(rng.normal(3.0, 1.0, n))
shifted = scores(base.nll[0] + 0.1, np.full(n, 0.02), np.ones(n))
noisy = scores(base.nll[0] + rng.normal(0.0, 0.5, n), rng.exponential(0.05, n), rng.random(n) < 0.9)
short = scores(base.nll[0][:600] + 0.1, np.full(600, 0.02), np.ones(600))
print(json.dumps({"shifted": quality.compare(base, shifted), "noisy": quality.compare(base, noisy),
                  "short": quality.compare(scores(base.nll[0][:600]), short),
                  "blocks": [quality.block_tokens(k) for k in (8192, 1024, 640, 600)]}))
"""


def test_intervals_cover_what_the_data_allows_and_none_when_too_short():
    r = engine_python(STATISTICS)
    assert r["blocks"] == [128, 51, 32, None]
    shifted = r["shifted"]  # a constant change: a zero-width interval, not noise
    assert shifted["delta_log_ppl_ci95"] == pytest.approx([0.1, 0.1])
    assert shifted["delta_log_ppl_within_noise"] is False
    assert shifted["top1_agreement_pct_ci95"] == [100.0, 100.0]
    noisy = r["noisy"]  # a change of mean 0: its interval covers 0 and is a few SE wide
    low, high = noisy["delta_log_ppl_ci95"]
    assert low < 0 < high and noisy["delta_log_ppl_within_noise"] is True
    assert 0.5 * 1.96 * 0.5 / 64 < (high - low) / 2 < 3 * 1.96 * 0.5 / 64
    assert 85 < noisy["top1_agreement_pct"] < 95 and noisy["kld_p90"] < noisy["kld_p99"]
    short = r["short"]  # 600 tokens: too few blocks to resample, so no interval at all
    assert short["kld_mean_ci95"] is None and short["delta_log_ppl_within_noise"] is None
