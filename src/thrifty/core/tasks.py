"""The one table of engine tasks: which engine runs each task and which feature's worker holds it.

A feature owns its engine tasks (they live in its own `worker.py`, even when they run in the
vLLM engine); any part that runs one names it by a constant here, never by a module string, so
that a renamed or moved task fails a test (tests/fast/test_tasks.py) instead of a user's run.
Names only: nothing here imports a feature.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """An engine task: run as `<engine python> -m <module> job.json`, found in module's TASKS."""

    engine: str
    module: str
    name: str


# assets: the built-in model and corpus
CONVERT_GGUF = Task("compress", "thrifty.assets.worker", "convert_gguf")
PREPARE_ENWIKI = Task("compress", "thrifty.assets.worker", "prepare_enwiki")
# compress: quantize, and eval (perplexity and size; task accuracy through lm-eval)
EVALUATE = Task("compress", "thrifty.compress.worker", "evaluate")
QUANTIZE = Task("compress", "thrifty.compress.worker", "quantize")
TASK_ACCURACY = Task("compress", "thrifty.compress.worker", "task_accuracy")  # lm-eval
# serve: generation in vLLM; adapter training, merging and reference generation in transformers
GENERATE = Task("vllm", "thrifty.serve.worker", "generate")
TRAIN_ADAPTERS = Task("compress", "thrifty.serve.worker", "train_adapters")
MERGE_ADAPTER = Task("compress", "thrifty.serve.worker", "merge_adapter")
REFERENCE_GENERATE = Task("compress", "thrifty.serve.worker", "reference_generate")
# benchmark: offline batch latency in vLLM
LATENCY = Task("vllm", "thrifty.benchmark.worker", "latency")
# cost: the machine's memory bandwidth and matmul rate
PROBE = Task("compress", "thrifty.cost.worker", "probe")
# distill: data and student preparation, the teacher's top-k capture in vLLM, training
DISTILL_PREPARE = Task("compress", "thrifty.distill.worker", "prepare")
TEACHER_TOPK = Task("vllm", "thrifty.distill.worker", "teacher_topk")
DISTILL_TRAIN = Task("compress", "thrifty.distill.worker", "train")


def all_tasks() -> list[Task]:
    return [value for value in globals().values() if isinstance(value, Task)]
