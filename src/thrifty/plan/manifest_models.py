"""Typed models of the deploy targets' documents, for the fields thrifty writes, so that a
misspelt key or a wrong type fails when the manifest is built, not when the cluster reads it.

production-stack: the `vllm-stack` chart's values schema (helm/values.schema.json,
vllm-project/production-stack a6c01db, chart 0.1.12): `servingEngineSpec.modelSpec[]` with
`vllmConfig`, and `routerSpec`. KServe: the LLMInferenceService CRD, version v1alpha2 (the
storage version; config/crd/full/llmisvc in kserve/kserve): `spec.model` (uri required) with
`lora`, `replicas`, `parallelism`, `template`, `router`. The kserve SDK 0.21 has no model of
the spec (docs/engines.md), so these are thrifty's own.
"""

import types
import typing
from dataclasses import asdict, dataclass, field, fields


def checked(instance) -> None:
    """Raise TypeError where a field's value is not of its annotated type."""
    hints = typing.get_type_hints(type(instance))
    for f in fields(instance):
        value, hint = getattr(instance, f.name), hints[f.name]
        if not _is(value, hint):
            raise TypeError(f"{type(instance).__name__}.{f.name} = {value!r} is not {hint}")


def _is(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


class Model:
    """A typed document part: checked on creation; as_dict() drops unset (None) fields."""

    def __post_init__(self):
        checked(self)

    def as_dict(self) -> dict:
        return _without_none(asdict(self))


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


# --- vLLM production-stack Helm values


@dataclass(frozen=True)
class VllmConfig(Model):
    tensorParallelSize: int
    maxModelLen: int
    dtype: str
    enablePrefixCaching: bool
    maxLoras: int | None = None
    extraArgs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelSpec(Model):
    name: str
    repository: str
    tag: str
    modelURL: str
    replicaCount: int
    requestCPU: int  # the schema's type is integer (cores)
    requestMemory: str
    requestGPU: int
    requestGPUType: str  # the GPU resource name, e.g. nvidia.com/gpu
    enableLoRA: bool
    vllmConfig: VllmConfig
    env: list[dict] = field(default_factory=list)
    nodeSelectorTerms: list[dict] = field(default_factory=list)
    extraVolumes: list[dict] = field(default_factory=list)
    extraVolumeMounts: list[dict] = field(default_factory=list)
    shmSize: str | None = None


@dataclass(frozen=True)
class RouterSpec(Model):
    enableRouter: bool
    routingLogic: str
    serviceDiscovery: str = "k8s"

    def __post_init__(self):
        super().__post_init__()
        if self.routingLogic not in ("roundrobin", "session", "prefixaware", "kvaware"):
            raise ValueError(f"routingLogic {self.routingLogic!r} is not one the chart offers")


@dataclass(frozen=True)
class StackValues(Model):
    modelSpec: list[ModelSpec]
    routerSpec: RouterSpec

    def as_dict(self) -> dict:
        return {"servingEngineSpec": {"modelSpec": [m.as_dict() for m in self.modelSpec]},
                "routerSpec": self.routerSpec.as_dict()}


# --- KServe LLMInferenceService (serving.kserve.io/v1alpha2)


@dataclass(frozen=True)
class LoraAdapter(Model):
    name: str
    uri: str


@dataclass(frozen=True)
class LoraSpec(Model):
    adapters: list[LoraAdapter]
    maxRank: int
    maxAdapters: int
    maxCpuAdapters: int


@dataclass(frozen=True)
class LLMModelSpec(Model):
    uri: str
    name: str
    lora: LoraSpec | None = None


@dataclass(frozen=True)
class LLMServiceSpec(Model):
    model: LLMModelSpec
    replicas: int
    parallelism: dict  # {"tensor": N}
    template: dict  # a core PodSpec (its containers checked by kubernetes-validate in tests)
    router: dict = field(default_factory=lambda: {"route": {}, "gateway": {}, "scheduler": {}})

    def __post_init__(self):
        super().__post_init__()
        if self.replicas < 0 or not all(isinstance(v, int) and v >= 1
                                        for v in self.parallelism.values()):
            raise ValueError("replicas must be >= 0 and each parallelism size >= 1")
