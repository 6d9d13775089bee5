"""The recommendation as something to run past one machine: the vLLM flags it was benched
with, and the manifests of each deploy target (plan/manifests.py writes their documents)."""

from pathlib import Path

import yaml

from thrifty.core.errors import BadInput
from thrifty.core.files import write_text
from thrifty.formats import serve_flags
from thrifty.plan import manifests

TARGETS = {"production-stack": manifests.production_stack_values,
           "kserve": manifests.kserve_llm_service,
           "k8s": manifests.kubernetes_objects}
FILE_NAMES = {"production-stack": "production-stack-values.yaml",
              "kserve": "kserve-llminferenceservice.yaml", "k8s": "kubernetes.yaml"}


def parse_targets(text: str | None) -> tuple[str, ...]:
    names = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        raise BadInput(f"--emit/--target: unknown target {unknown[0]!r}; the targets are "
                       f"{', '.join(TARGETS)} (comma-separated).")
    return names


def serving_spec(recommendation: dict | None, speed: dict[str, dict],
                 adapters: dict[str, str]) -> dict | None:
    """What the deployment runs: the recommended checkpoint with the vLLM flags `thrifty serve`
    derived and `thrifty bench` measured (its tensor parallelism set to the plan's, and CUDA
    graphs on, as `thrifty serve` does on a GPU)."""
    if recommendation is None:
        return None
    variant = recommendation["variant"]
    benched = [(name, s["flags"]) for name, s in speed.items() if s.get("flags")]
    own = speed.get(variant, {}).get("flags")
    source, flags = ((variant, own) if own else benched[0] if benched else
                     (None, {"dtype": "auto", "max_model_len": 2048, "lora": False}))
    flags = {**{k: flags.get(k) for k in serve_flags.TUNING_KEYS},
             "tensor_parallel_size": recommendation["tensor_parallel"], "eager": False}
    return {
        "served_model_name": Path(recommendation["checkpoint"]).name,
        "checkpoint": recommendation["checkpoint"], "flags": flags,
        "vllm_args": serve_flags.tuning_args(flags),
        "adapters": [{"name": name, "folder": path} for name, path in adapters.items()],
        "flags_from": (f"the bench run of {source}" if source else
                       "defaults (no variant was benched here)"),
    }


def write_manifests(decided: dict, targets: tuple[str, ...], folder: Path,
                    model_uri: str | None = None, force: bool = True) -> list[Path]:
    """One YAML file per target in `folder`; refused when the plan recommends nothing."""
    spec = decided.get("serving")
    if not spec:
        raise BadInput("The plan recommends no option (" + str(decided.get("nothing_meets"))
                       + "), so there is nothing to deploy. Relax the constraints and plan "
                       "again.")
    manifests.check_deployable(decided, targets, model_uri)
    written = []
    for target in targets:
        path = folder / FILE_NAMES[target]
        if path.exists() and not force:
            raise BadInput(f"{path} exists; pass --force to replace it.")
        documents = TARGETS[target](decided, model_uri)
        write_text(path, yaml.safe_dump_all(documents, sort_keys=False))
        written.append(path)
    return written
