"""Model families (one package each: model, Hugging Face mapping, evaluation adapter) over shared blocks.

`registry` lists the families; everything else reaches a family through `family_of(model)` and the
`LanguageModel` interface, never by its name.
"""

from lightning_llm.models.base import LanguageModel
from lightning_llm.models.bert import BERT
from lightning_llm.models.blocks import ModelConfig
from lightning_llm.models.family import Family
from lightning_llm.models.gpt import GPT
from lightning_llm.models.registry import families, family_of, get_family, register_family
from lightning_llm.models.t5 import T5

__all__ = [
    "BERT",
    "GPT",
    "T5",
    "Family",
    "LanguageModel",
    "ModelConfig",
    "families",
    "family_of",
    "get_family",
    "register_family",
]
