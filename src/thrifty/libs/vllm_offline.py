"""All of thrifty's calls into vLLM's Python API, in one place (runs inside the vllm engine)."""

import os


def offline_llm(model: str, max_model_len: int, eager: bool = True, seed: int = 0,
                max_logprobs: int = 20, tensor_parallel_size: int = 1):
    """A vLLM offline engine. On CPU the KV cache is bounded by VLLM_CPU_KVCACHE_SPACE (GiB).

    eager=True skips torch.compile, which costs over a minute on a small CPU before the
    first token; it is the right trade for short jobs.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    return LLM(model=model, max_model_len=max_model_len, seed=seed, enforce_eager=eager,
               trust_remote_code=False, max_logprobs=max_logprobs,
               tensor_parallel_size=tensor_parallel_size)


def greedy_params(max_tokens: int):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def exact_length_params(max_tokens: int):
    """Greedy, and end-of-sequence ignored: exactly max_tokens tokens (benchmarks)."""
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def prompt_topk_params(top_k: int):
    """Score the prompt only: top-k log-probabilities at every prompt position, one token out.

    Log-probabilities are vLLM's default `raw_logprobs` (log-softmax of the raw logits over the
    full vocabulary, before any temperature); detokenize=False skips decoding the k tokens of
    every position, which would cost more than the forward pass.
    """
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=top_k,
                          detokenize=False)


def prompt_topk(output, top_k: int) -> tuple[list[list[int]], list[list[float]]]:
    """(ids, logprobs) of the k most likely tokens after each prompt position but the last.

    vLLM's prompt_logprobs[i] is the distribution of prompt token i given the tokens before it
    (None at i = 0) and holds the top k plus the actual token when that one ranks lower.
    """
    ids, logprobs = [], []
    for position in output.prompt_logprobs[1:]:
        top = sorted(((lp.rank, token, lp.logprob) for token, lp in position.items()
                      if lp.rank <= top_k))[:top_k]
        ids.append([token for _, token, _ in top])
        logprobs.append([logprob for _, _, logprob in top])
    return ids, logprobs


def token_prompts(token_ids: list[list[int]]) -> list:
    """Prompts given as token ids (exact lengths, no tokenizer round trip)."""
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=ids) for ids in token_ids]


def generate_quietly(llm, prompts, sampling) -> list:
    return llm.generate(prompts, sampling, use_tqdm=False)


def version() -> str:
    import vllm

    return vllm.__version__
