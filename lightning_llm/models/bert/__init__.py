"""The BERT family: its model, Hugging Face mapping and evaluation adapter."""

from lightning_llm.models.bert.family import FAMILY
from lightning_llm.models.bert.model import BERT

__all__ = ["FAMILY", "BERT"]
