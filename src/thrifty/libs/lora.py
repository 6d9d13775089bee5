"""All of thrifty's peft calls, in one place (runs inside the compress engine): LoRA adapters
for the demo adapters of `thrifty serve` and for LoRA students of `thrifty distill`."""

# Every linear projection of a Llama-style block: attention and MLP.
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def add_lora(model, rank: int, alpha: int, target_modules: list[str]):
    """Wrap `model` with fresh LoRA adapters (lora_B starts at zero: the output is unchanged)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                        target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def with_adapter(model, adapter_path: str, weight: float = 1.0):
    """`model` with a saved adapter applied, its low-rank update scaled by `weight` (1: as
    trained)."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = PeftModel.from_pretrained(model, adapter_path)
    if weight != 1.0:
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.set_scale("default", weight)
    return model


def merged(model_with_adapter):
    """A plain model with the adapter's low-rank update folded into its weights."""
    return model_with_adapter.merge_and_unload()
