"""Compress-engine tasks of `thrifty distill`: `prepare` (distill/prepare.py) and `train`
(distill/trainer.py).

Run as `<compress engine python> -m thrifty.distill.worker <job file>`, or under torchrun /
accelerate launch for several processes; then only rank 0 reports and writes the result.
"""

from thrifty.core.jobs import Events, worker_main


def prepare(params: dict, events: Events) -> dict:
    from thrifty.distill.prepare import prepare as run_prepare

    return run_prepare(params, events)


def train(params: dict, events: Events) -> dict:
    from thrifty.distill.trainer import train as run_train

    return run_train(params, events)


if __name__ == "__main__":
    worker_main({"prepare": prepare, "train": train})
