"""lightning-llm: declarative, config-driven LLM experiments."""

from lightning_llm import conf as _conf  # noqa: F401  (registers the configs' resolvers: ${mul:}, ${optuna_study:})

__version__ = "0.1.0"
