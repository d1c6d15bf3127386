"""Model architectures over shared transformer blocks."""

from lightning_llm.models.blocks import ModelConfig
from lightning_llm.models.gpt import GPT

__all__ = ["GPT", "ModelConfig"]
