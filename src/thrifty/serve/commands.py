"""`thrifty generate`: a completion from a model running in vLLM (a smoke test of a model)."""

import click

from thrifty.assets import prepare
from thrifty.core import tasks
from thrifty.core.execute import run_in_engine
from thrifty.core.output import emit_json, json_option
from thrifty.core.runs import RunRecord


@click.command()
@click.argument("model")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT",
              default=["The capital of France is"], show_default=True,
              help="Prompt to complete; repeat for several.")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(min=1),
              help="Tokens to generate per prompt (greedy decoding).")
@click.option("--max-model-len", default=2048, show_default=True, type=click.IntRange(min=16),
              help="Context length vLLM reserves KV cache for.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Let vLLM torch.compile the model: faster decoding, but a minute or more of "
                   "start-up on a CPU. Off by default (eager mode).")
@click.option("--allow-pickle", is_flag=True, help="Accept pickle (.bin) weights.")
@json_option
def generate(model: str, prompts: tuple[str, ...], max_tokens: int, max_model_len: int,
             compile_model: bool, allow_pickle: bool, as_json: bool) -> None:
    """Generate greedy completions of the prompts with MODEL in the vllm engine.

    MODEL is a built-in name, a local folder (a thrifty-quantized checkpoint works) or a
    hub id. Shows the completions, vLLM's start-up time and the generation time.
    """
    ref = prepare.ensure_model(model, allow_pickle=allow_pickle)
    config = {"model": ref.__dict__, "prompts": list(prompts), "max_tokens": max_tokens,
              "max_model_len": max_model_len, "compile": compile_model}
    with RunRecord("generate", config, engines_used=("vllm",)) as run:
        result = run_in_engine(
            tasks.GENERATE,
            {"model": ref.path, "prompts": list(prompts), "max_tokens": max_tokens,
             "max_model_len": max_model_len, "compile": compile_model},
            run.path, title=f"generating with {model}")
        output_tokens = sum(c["output_tokens"] for c in result["completions"])
        run.record({"engine_start_s": result["engine_start_s"],
                    "generate_s": result["generate_s"], "output_tokens": output_tokens,
                    "output_tokens_per_s": round(output_tokens / result["generate_s"], 2)},
                   details=result)
    if as_json:
        emit_json({"run": str(run.path), **result})
        return
    for completion in result["completions"]:
        click.secho(completion["prompt"], bold=True, nl=False)
        click.echo(completion["text"])
    click.echo(f"\nvLLM {result['vllm_version']}: engine start {result['engine_start_s']} s, "
               f"{output_tokens} tokens in {result['generate_s']} s. Run record: {run.path}")
