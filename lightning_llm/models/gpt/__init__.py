"""The GPT family: its model, Hugging Face mapping and evaluation adapter."""

from lightning_llm.models.gpt.family import FAMILY
from lightning_llm.models.gpt.model import GPT

__all__ = ["FAMILY", "GPT"]
