"""lightning-llm: declarative, config-driven LLM experiments."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${mul:a,b}` in configs, e.g. the data-parallel size of trainer=fsdp (devices x nodes)
OmegaConf.register_new_resolver("mul", lambda a, b: int(a) * int(b), replace=True)
