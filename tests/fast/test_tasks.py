"""Every engine task in the task table exists in its worker, and every worker task is named."""

import importlib

from thrifty.core import tasks

ENGINES = {"compress", "vllm"}


def test_every_task_reference_names_a_task_its_worker_has():
    for task in tasks.all_tasks():
        worker = importlib.import_module(task.module)
        assert task.engine in ENGINES, task
        assert task.name in worker.TASKS, f"{task} names a task {task.module} does not have"


def test_every_worker_task_has_a_reference():
    named = {(t.module, t.name) for t in tasks.all_tasks()}
    for module in {t.module for t in tasks.all_tasks()}:
        for name in importlib.import_module(module).TASKS:
            assert (module, name) in named, f"{module} task {name!r} has no entry in core.tasks"


def test_a_reference_to_a_missing_task_fails_the_check(monkeypatch):
    monkeypatch.setattr(tasks, "BOGUS", tasks.Task("vllm", "thrifty.serve.worker", "no_such"),
                        raising=False)
    missing = [t for t in tasks.all_tasks()
               if t.name not in importlib.import_module(t.module).TASKS]
    assert [t.name for t in missing] == ["no_such"]
