"""All of thrifty's calls into vLLM's Python API, in one place (runs inside the vllm engine)."""

import os


def offline_llm(model: str, max_model_len: int, eager: bool = True, seed: int = 0):
    """A vLLM offline engine. On CPU the KV cache is bounded by VLLM_CPU_KVCACHE_SPACE (GiB).

    eager=True skips torch.compile, which costs over a minute on a small CPU before the
    first token; it is the right trade for short jobs.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    return LLM(model=model, max_model_len=max_model_len, seed=seed, enforce_eager=eager,
               trust_remote_code=False)


def greedy_params(max_tokens: int):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def exact_length_params(max_tokens: int):
    """Greedy, and end-of-sequence ignored: exactly max_tokens tokens (benchmarks)."""
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def token_prompts(token_ids: list[list[int]]) -> list:
    """Prompts given as token ids (exact lengths, no tokenizer round trip)."""
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=ids) for ids in token_ids]


def generate_quietly(llm, prompts, sampling) -> list:
    return llm.generate(prompts, sampling, use_tqdm=False)


def version() -> str:
    import vllm

    return vllm.__version__
