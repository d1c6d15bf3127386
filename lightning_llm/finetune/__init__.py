"""Fine-tuning methods: one switch (`finetune=`) chooses how a pretrained model is adapted."""

from lightning_llm.finetune.adapter import Adapter
from lightning_llm.finetune.base import FinetuneMethod, NoFinetuning, count_parameters
from lightning_llm.finetune.freeze import Freeze
from lightning_llm.finetune.full import Full
from lightning_llm.finetune.lora import LoRA
from lightning_llm.finetune.prompt import PromptTuning
from lightning_llm.finetune.qlora import QLoRA
from lightning_llm.finetune.registry import METHODS, method_from_description

__all__ = [
    "METHODS",
    "Adapter",
    "FinetuneMethod",
    "Freeze",
    "Full",
    "LoRA",
    "NoFinetuning",
    "PromptTuning",
    "QLoRA",
    "count_parameters",
    "method_from_description",
]
