"""vLLM's OpenAI-compatible server with thrifty's adapter policy (runs inside the vllm engine).

Run as `<vllm engine python> -m thrifty.libs.vllm_server <config.json>`; `thrifty serve`
writes the config. Before handing over to vLLM's own entry point this module:
- checks every adapter vLLM is asked to load (at start, and through /v1/load_lora_adapter)
  with thrifty's rules: an allowed folder, safetensors LoRA weights, shapes that fit the base,
  a rank within --max-lora-rank. A refusal is an HTTP 400/403 whose message says why;
- registers a resolver for the adapters folder: a request naming an adapter that sits in that
  folder loads it (vLLM's own filesystem resolver insists that the adapter's recorded base
  name equals the served name, which rules out serving it over a quantized copy);
- adds GET /v1/thrifty/info (behind the API key, like the rest of /v1): the server's limits
  and the adapters its folder holds.
These are the only places thrifty reaches into vLLM's server internals.
"""

import logging
import sys
from http import HTTPStatus
from pathlib import Path

from thrifty.core.files import read_json
from thrifty.formats import lora_adapter as adapters

log = logging.getLogger("thrifty.serve")


class Policy:
    def __init__(self, info: dict):
        """info: the plan summary written by `thrifty serve` (ServePlan.summary)."""
        self.info = info
        self.base_dir = info["base_path"]
        self.base_label = info["base"]
        self.max_rank = info["max_lora_rank"] or 0  # 0: LoRA off, every load is refused
        self.allowed_dirs = info["allowed_dirs"]
        self.startup_paths = tuple(a["path"] for a in info["startup_adapters"].values())
        self.adapters_dir = info["adapters_dir"]

    def check(self, path: str) -> None:
        adapters.validate(path, self.base_dir, self.base_label, self.max_rank, self.allowed_dirs,
                          exact=self.startup_paths)

    def folder_inventory(self) -> dict[str, dict]:
        if not self.adapters_dir or not Path(self.adapters_dir).is_dir():
            return {}
        inventory = {}
        for name, path in adapters.scan_folder(self.adapters_dir).items():
            try:
                info = adapters.validate(path, self.base_dir, self.base_label, self.max_rank)
                inventory[name] = {"path": str(path), "rank": info.rank, "problem": None}
            except adapters.AdapterRejected as exc:
                inventory[name] = {"path": str(path), "rank": None, "problem": str(exc)}
        return inventory


def install_load_guard(policy: Policy) -> None:
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

    vllm_checks = OpenAIServingModels._check_load_lora_adapter_request

    async def checked(self, request):
        error = await vllm_checks(self, request)
        if error is not None:
            return error
        try:
            policy.check(request.lora_path)
        except adapters.AdapterRejected as exc:
            log.warning("Refused to load adapter %s: %s", request.lora_name, exc)
            status = (HTTPStatus.FORBIDDEN if isinstance(exc, adapters.AdapterNotAllowed)
                      else HTTPStatus.BAD_REQUEST)
            # Not vLLM's create_error_response: it replaces every path with "<path>", and
            # these messages only name the requested path and the folders the operator allowed.
            return ErrorResponse(error=ErrorInfo(message=str(exc), type="InvalidUserInput",
                                                 code=status.value))
        return None

    OpenAIServingModels._check_load_lora_adapter_request = checked


def install_folder_resolver(policy: Policy) -> None:
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

    class FolderResolver(LoRAResolver):
        """Serves `<adapters dir>/<name>` as model `<name>` once it passes the checks."""

        async def resolve_lora(self, base_model_name: str, lora_name: str):
            if not adapters.NAME.match(lora_name):
                return None
            path = Path(policy.adapters_dir) / lora_name
            if not (path / adapters.CONFIG_FILE).is_file():
                return None
            try:
                policy.check(str(path))
            except adapters.AdapterRejected as exc:
                log.warning("Not serving %s from the adapters folder: %s", lora_name, exc)
                return None
            # vLLM replaces the id with its own counter's next value.
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(path))

    LoRAResolverRegistry.register_resolver("thrifty adapters folder", FolderResolver())


def install_info_route(policy: Policy) -> None:
    import vllm.entrypoints.launchers.api_server.entry as entry

    build_app = entry.build_app

    def build_app_with_info(*args, **kwargs):
        app = build_app(*args, **kwargs)

        async def thrifty_info():
            return {**policy.info, "folder_adapters": policy.folder_inventory()}

        app.add_api_route("/v1/thrifty/info", thrifty_info, methods=["GET"])
        return app

    entry.build_app = build_app_with_info


def main() -> None:
    config = read_json(Path(sys.argv[1]))
    logging.basicConfig(level=logging.INFO, format="(thrifty) %(levelname)s %(message)s")
    policy = Policy(config["info"])
    install_load_guard(policy)
    if policy.adapters_dir:
        install_folder_resolver(policy)
    install_info_route(policy)
    from vllm.entrypoints.launchers.api_server.entry import main as vllm_main

    sys.argv = ["vllm-serve", *config["vllm_args"]]
    vllm_main()


if __name__ == "__main__":
    main()
