"""Compress a model: quantization and quality evaluation (perplexity)."""
