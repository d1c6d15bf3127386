"""The T5 family: its model, Hugging Face mapping and evaluation adapter."""

from lightning_llm.models.t5.family import FAMILY
from lightning_llm.models.t5.model import T5

__all__ = ["FAMILY", "T5"]
