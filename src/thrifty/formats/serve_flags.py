"""The serving flags `thrifty serve` derives (dtype, context, tensor parallelism, LoRA sizes)
and the vLLM arguments they stand for: the one mapping, used by the server thrifty starts and
by the manifests `thrifty plan` writes, so both run vLLM with the same flags."""

TUNING_KEYS = ("dtype", "max_model_len", "tensor_parallel_size", "eager", "lora",
               "max_lora_rank", "max_loras", "max_cpu_loras")


def tuning_args(flags: dict) -> list[str]:
    """vLLM's arguments for the flags (a `thrifty serve` summary or a bench run's target
    flags); the model, address and startup adapters are the caller's."""
    args = ["--dtype", str(flags["dtype"]), "--max-model-len", str(flags["max_model_len"]),
            "--tensor-parallel-size", str(flags["tensor_parallel_size"])]
    if flags.get("eager"):
        args.append("--enforce-eager")
    if flags.get("lora"):
        args += ["--enable-lora", "--max-lora-rank", str(flags["max_lora_rank"]),
                 "--max-loras", str(flags["max_loras"]),
                 "--max-cpu-loras", str(flags["max_cpu_loras"])]
    return args
