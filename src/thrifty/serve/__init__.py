"""Serve a model (and LoRA adapters) with vLLM."""
