"""Engine-side wrappers: one module per fragile library (transformers, peft, llmc, vLLM)."""
