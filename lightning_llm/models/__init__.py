"""Model architectures (one file each) over shared transformer blocks."""

from lightning_llm.models.bert import BERT
from lightning_llm.models.blocks import ModelConfig
from lightning_llm.models.gpt import GPT
from lightning_llm.models.t5 import T5

#: Our architectures by family name (checkpoints record the family).
MODEL_CLASSES = {"gpt": GPT, "bert": BERT, "t5": T5}

__all__ = ["BERT", "GPT", "MODEL_CLASSES", "T5", "ModelConfig"]
