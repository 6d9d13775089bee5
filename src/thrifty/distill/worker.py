"""Engine tasks of `thrifty distill`: `prepare` (distill/prepare.py) and `train`
(distill/trainer.py) in the compress engine, `teacher_topk` (distill/capture.py) in the vLLM engine.

Run as `<engine python> -m thrifty.distill.worker <job file>`, or under torchrun / accelerate
launch for several processes; then only rank 0 reports and writes the result.
"""

from thrifty.core.jobs import Events, worker_main
from thrifty.distill.capture import teacher_topk


def prepare(params: dict, events: Events) -> dict:
    from thrifty.distill.prepare import prepare as run_prepare

    return run_prepare(params, events)


def train(params: dict, events: Events) -> dict:
    from thrifty.distill.trainer import train as run_train

    return run_train(params, events)


TASKS = {"prepare": prepare, "train": train, "teacher_topk": teacher_topk}

if __name__ == "__main__":
    worker_main(TASKS)
