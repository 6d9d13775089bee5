"""Make real peft adapters that a server must refuse (run with the compress engine's python).

usage: python peft_adapters.py OUT_DIR BASE_DIR
  OUT_DIR/other-base   a LoRA adapter for a smaller Llama (hidden size 64)
  OUT_DIR/rank16       a rank-16 LoRA adapter for BASE
  OUT_DIR/pickle-only  a LoRA adapter for BASE saved as adapter_model.bin
"""

import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

out, base = Path(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)


def lora(model, rank, folder, safe=True):
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out / folder, safe_serialization=safe)


small = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
lora(AutoModelForCausalLM.from_config(small), 8, "other-base")
lora(AutoModelForCausalLM.from_pretrained(base), 16, "rank16")
lora(AutoModelForCausalLM.from_pretrained(base), 8, "pickle-only", safe=False)
