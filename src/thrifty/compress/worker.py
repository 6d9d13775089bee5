"""Engine tasks of compress: `evaluate` (perplexity, size and distance from the first model;
compress/evaluate.py) and `quantize` (llm-compressor; compress/quantize.py).

Run as `<compress engine python> -m thrifty.compress.worker <job file>`.
"""

from thrifty.compress.evaluate import evaluate
from thrifty.compress.lm_eval_task import task_accuracy
from thrifty.core.jobs import Events, worker_main


def quantize(params: dict, events: Events) -> dict:
    from thrifty.compress.quantize import quantize as run_quantize

    return run_quantize(params, events)


TASKS = {"evaluate": evaluate, "quantize": quantize, "task_accuracy": task_accuracy}

if __name__ == "__main__":
    worker_main(TASKS)
