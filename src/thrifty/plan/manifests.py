"""The documents each deploy target reads, built from a plan's recommendation.

Every target runs the same vLLM image (the version thrifty's CUDA engine pins) with the same
flags (the plan's `serving.vllm_args`), the checkpoint and adapters read from one volume. The
model is addressed by a URI: `pvc://CLAIM/PATH` (default `pvc://thrifty-models/<checkpoint>`,
the checkpoint folder copied into that claim), or a `hf://` / `s3://` URI for KServe.
"""

import re
from importlib import resources

from thrifty.core.errors import BadInput
from thrifty.plan.manifest_models import (
    LLMModelSpec,
    LLMServiceSpec,
    LoraAdapter,
    LoraSpec,
    ModelSpec,
    RouterSpec,
    StackValues,
    VllmConfig,
)

# The node label NVIDIA's GPU Feature Discovery sets (nvidia.com/gpu.product: the product name
# nvidia-smi reports, spaces as dashes), per catalog GPU. AMD's device plugin labels differ.
GPU_PRODUCT_LABELS = {
    "b200": "NVIDIA-B200", "h200": "NVIDIA-H200", "h100-sxm": "NVIDIA-H100-80GB-HBM3",
    "h100-pcie": "NVIDIA-H100-PCIe", "a100-80gb": "NVIDIA-A100-SXM4-80GB",
    "a100-40gb": "NVIDIA-A100-SXM4-40GB", "l40s": "NVIDIA-L40S",
    "rtx-6000-ada": "NVIDIA-RTX-6000-Ada-Generation", "rtx-4090": "NVIDIA-GeForce-RTX-4090",
    "a10g": "NVIDIA-A10G", "l4": "NVIDIA-L4", "t4": "Tesla-T4",
}
PORT = 8000
MODELS_MOUNT = "/models"


def check_deployable(decided: dict, targets: tuple[str, ...], given_uri: str | None) -> None:
    """Refuse what the manifests cannot express: a GPU without a known NVIDIA node label (an
    AMD or a user-catalog GPU), or a model URI the target cannot mount."""
    gpu = decided["recommendation"]["gpu"]
    if gpu not in GPU_PRODUCT_LABELS:
        raise BadInput(f"thrifty writes manifests for the NVIDIA GPUs of its catalog (node label "
                       f"nvidia.com/gpu.product and the CUDA vLLM image); the recommended "
                       f"{gpu} is not one. Plan again with --gpus limited to NVIDIA GPUs to "
                       "get manifests.")
    uri = model_uri(decided, given_uri)
    volume = {"k8s", "production-stack"} & set(targets)
    needs_pvc = volume or decided["serving"]["adapters"]
    if needs_pvc and not _pvc(uri):
        what = (f"the {' and '.join(sorted(volume))} manifests mount the model from a volume"
                if volume else "the adapters are read beside the model")
        raise BadInput(f"--model-uri {uri}: {what}, so give pvc://CLAIM/PATH (the checkpoint "
                       "folder copied into that PersistentVolumeClaim).")


def vllm_image() -> str:
    """vllm/vllm-openai at the version thrifty's CUDA engine pins (what `thrifty serve` runs)."""
    text = (resources.files("thrifty") / "engines" / "vllm-cuda.txt").read_text()
    version = re.search(r"^vllm==(\S+)", text, re.MULTILINE).group(1)
    return f"vllm/vllm-openai:v{version}"


def resource_name(decided: dict) -> str:
    """A DNS-1035 name for the deployment: thrifty-<checkpoint>."""
    base = re.sub(r"[^a-z0-9-]+", "-", decided["serving"]["served_model_name"].lower())
    return ("thrifty-" + base).strip("-")[:52].rstrip("-")


def model_uri(decided: dict, given: str | None) -> str:
    return given or f"pvc://thrifty-models/{decided['serving']['served_model_name']}"


def _pvc(uri: str) -> tuple[str, str] | None:
    """pvc://CLAIM/PATH -> (CLAIM, PATH)."""
    match = re.fullmatch(r"pvc://([a-z0-9][a-z0-9.-]*)/(.+)", uri)
    return (match.group(1), match.group(2)) if match else None


def container_args(decided: dict, model_path: str) -> list[str]:
    spec = decided["serving"]
    return ["--model", model_path, "--served-model-name", spec["served_model_name"],
            "--host", "0.0.0.0", "--port", str(PORT), *spec["vllm_args"],
            *_lora_modules(spec)]


def _lora_modules(spec: dict) -> list[str]:
    """The adapters vLLM loads at start, from the models volume."""
    if not spec["adapters"]:
        return []
    return ["--lora-modules", *(f"{a['name']}={MODELS_MOUNT}/adapters/{a['name']}"
                                for a in spec["adapters"])]


def _labels(decided: dict) -> dict:
    return {"app.kubernetes.io/name": resource_name(decided),
            "app.kubernetes.io/managed-by": "thrifty"}


def _env(decided: dict) -> list[dict]:
    env = [{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "thrifty-api-key", "key": "api-key", "optional": True}}}]
    if decided["serving"]["adapters"]:  # lets `thrifty adapters load` add adapters at runtime
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
    return env


def kubernetes_objects(decided: dict, given_uri: str | None) -> list[dict]:
    """A Deployment of the recommended replicas and a Service in front of them."""
    rec, name = decided["recommendation"], resource_name(decided)
    claim, path = _pvc(model_uri(decided, given_uri)) or ("thrifty-models",
                                                           decided["serving"]["served_model_name"])
    gpus = rec["tensor_parallel"]
    container = {
        "name": "vllm", "image": vllm_image(),
        "args": container_args(decided, f"{MODELS_MOUNT}/{path}"), "env": _env(decided),
        "ports": [{"name": "http", "containerPort": PORT}],
        "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                           "initialDelaySeconds": 30, "periodSeconds": 10},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
                         {"name": "shm", "mountPath": "/dev/shm"}],
    }
    pod = {"containers": [container], "volumes": [
        {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]}
    if rec["gpu"] in GPU_PRODUCT_LABELS:
        pod["nodeSelector"] = {"nvidia.com/gpu.product": GPU_PRODUCT_LABELS[rec["gpu"]]}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(decided)},
        "spec": {"replicas": rec["replicas"], "selector": {"matchLabels": _labels(decided)},
                 "template": {"metadata": {"labels": _labels(decided)}, "spec": pod}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": _labels(decided)},
        "spec": {"selector": _labels(decided),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    return [deployment, service]



def _gpu_selector_terms(gpu: str) -> list[dict]:
    if gpu not in GPU_PRODUCT_LABELS:
        return []
    return [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                   "values": [GPU_PRODUCT_LABELS[gpu]]}]}]


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def production_stack_values(decided: dict, given_uri: str | None) -> list[dict]:
    """Helm values for vLLM's production-stack chart (`helm install ... -f`): one model spec
    with the plan's GPU, GPUs per replica, replicas and vLLM flags, and the router in front.
    Adapters load at start from the models volume; runtime loading stays on."""
    rec, spec = decided["recommendation"], decided["serving"]
    claim, path = _pvc(model_uri(decided, given_uri)) or ("thrifty-models",
                                                           spec["served_model_name"])
    args = spec["vllm_args"]
    mapped = {"--dtype", "--max-model-len", "--tensor-parallel-size", "--max-loras",
              "--enable-lora"}
    extra, skip = [], False
    for arg in args:  # flags the chart has no key for travel as extraArgs
        if skip:
            skip = False
        elif arg in mapped:
            skip = arg != "--enable-lora"
        else:
            extra.append(arg)
    extra += ["--served-model-name", spec["served_model_name"], *_lora_modules(spec)]
    gpus = rec["tensor_parallel"]
    values = StackValues(modelSpec=[ModelSpec(
        name=resource_name(decided), repository=vllm_image().split(":")[0],
        tag=vllm_image().split(":")[1], modelURL=f"{MODELS_MOUNT}/{path}",
        replicaCount=rec["replicas"], requestCPU=4 * gpus, requestMemory=f"{32 * gpus}Gi",
        requestGPU=gpus, requestGPUType="nvidia.com/gpu", enableLoRA=bool(spec["adapters"]),
        vllmConfig=VllmConfig(tensorParallelSize=gpus,
                              maxModelLen=int(_flag(args, "--max-model-len")),
                              # the chart always passes a prefix-caching flag; on is vLLM's
                              # default, which `thrifty serve` runs with
                              dtype=_flag(args, "--dtype"), enablePrefixCaching=True,
                              maxLoras=int(_flag(args, "--max-loras"))
                              if "--max-loras" in args else None, extraArgs=extra),
        env=[e for e in _env(decided) if "value" in e],
        nodeSelectorTerms=_gpu_selector_terms(rec["gpu"]),
        extraVolumes=[{"name": "models", "persistentVolumeClaim": {"claimName": claim,
                                                                    "readOnly": True}}],
        extraVolumeMounts=[{"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True}],
        shmSize="2Gi")], routerSpec=RouterSpec(enableRouter=True, routingLogic="roundrobin"))
    return [values.as_dict()]


def kserve_llm_service(decided: dict, given_uri: str | None) -> list[dict]:
    """A KServe LLMInferenceService (serving.kserve.io/v1alpha2): KServe starts vLLM with the
    model's name and tensor parallelism from the spec and LoRA flags from spec.model.lora; the
    plan's other flags go in VLLM_ADDITIONAL_ARGS, which KServe's vLLM template appends."""
    rec, spec = decided["recommendation"], decided["serving"]
    uri = model_uri(decided, given_uri)
    args, flags = spec["vllm_args"], spec["flags"]
    others = ["--dtype", _flag(args, "--dtype"), "--max-model-len",
              _flag(args, "--max-model-len")]
    lora = None
    if spec["adapters"]:
        base = uri.rsplit("/", 1)[0]
        lora = LoraSpec(adapters=[LoraAdapter(a["name"], f"{base}/adapters/{a['name']}")
                                  for a in spec["adapters"]],
                        maxRank=flags["max_lora_rank"], maxAdapters=flags["max_loras"],
                        maxCpuAdapters=flags["max_cpu_loras"])
    gpus = rec["tensor_parallel"]
    pod = {"containers": [{"name": "main", "env": [
        {"name": "VLLM_ADDITIONAL_ARGS", "value": " ".join(others)},
        *[e for e in _env(decided) if e["name"] != "VLLM_API_KEY"]],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)},
                      "requests": {"nvidia.com/gpu": str(gpus)}}}]}
    if rec["gpu"] in GPU_PRODUCT_LABELS:
        pod["nodeSelector"] = {"nvidia.com/gpu.product": GPU_PRODUCT_LABELS[rec["gpu"]]}
    service = LLMServiceSpec(
        model=LLMModelSpec(uri=uri, name=spec["served_model_name"], lora=lora),
        replicas=rec["replicas"], parallelism={"tensor": gpus}, template=pod)
    return [{"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
             "metadata": {"name": resource_name(decided), "labels": _labels(decided)},
             "spec": service.as_dict()}]
