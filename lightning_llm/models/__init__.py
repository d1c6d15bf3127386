"""Model architectures (one file each) over shared transformer blocks."""

from lightning_llm.models.bert import BERT
from lightning_llm.models.blocks import ModelConfig
from lightning_llm.models.gpt import GPT
from lightning_llm.models.t5 import T5

__all__ = ["BERT", "GPT", "T5", "ModelConfig"]
