"""lightning-llm: declarative, config-driven LLM experiments."""

__version__ = "0.1.0"
