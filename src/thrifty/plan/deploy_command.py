"""`thrifty deploy render`: the manifests of an existing plan's recommendation."""

from pathlib import Path

import click

from thrifty.core.output import emit_json, json_option
from thrifty.formats import plan as plan_format
from thrifty.plan import deploy


@click.group("deploy")
def deploy_group() -> None:
    """Deploy a plan's recommendation past one machine (Kubernetes manifests)."""


@deploy_group.command("render")
@click.argument("plan_ref", metavar="PLAN")
@click.option("--target", "targets_text", default="production-stack,kserve,k8s",
              show_default=True, help="Which manifests to write (comma-separated).")
@click.option("--model-uri", help="Where the cluster reads the checkpoint: pvc://CLAIM/PATH "
                                  "(default pvc://thrifty-models/<checkpoint>), or for KServe "
                                  "also hf:// or s3://.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the manifests (default: PLAN/manifests).")
@click.option("--force", is_flag=True, help="Replace manifests already there.")
@json_option
def render(plan_ref: str, targets_text: str, model_uri: str | None, out: str | None,
           force: bool, as_json: bool) -> None:
    """Write the manifests that run PLAN's recommendation: vLLM production-stack Helm values,
    a KServe LLMInferenceService, or a plain Kubernetes Deployment and Service. Each runs the
    vLLM flags the plan benchmarked, on the recommended GPU, GPUs per replica and replicas.

    \b
    thrifty deploy render plan/ --target k8s
    kubectl apply -f plan/manifests/kubernetes.yaml
    """
    decided = plan_format.load(plan_ref)
    targets = deploy.parse_targets(targets_text)
    given = Path(plan_ref).expanduser()
    folder = Path(out) if out else (given if given.is_dir() else given.parent) / "manifests"
    written = deploy.write_manifests(decided, targets, folder, model_uri, force)
    if as_json:
        emit_json({"files": [str(p) for p in written]})
        return
    for path in written:
        click.echo(f"Wrote {path}")
