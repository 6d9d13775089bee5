"""thrifty: make a fine-tuned LLM cheap to deploy."""

__version__ = "0.1.0"
