"""Training objectives: collation, labels and loss for each way of training a model."""

from lightning_llm.objectives.base import EXAMPLES, IGNORE_INDEX, Objective, ObjectiveOutput
from lightning_llm.objectives.classify import SequenceClassification
from lightning_llm.objectives.clm import CausalLM
from lightning_llm.objectives.mlm import MaskedLM
from lightning_llm.objectives.sft import SupervisedFineTuning
from lightning_llm.objectives.span import SpanCorruption

__all__ = [
    "EXAMPLES",
    "IGNORE_INDEX",
    "CausalLM",
    "MaskedLM",
    "Objective",
    "ObjectiveOutput",
    "SequenceClassification",
    "SpanCorruption",
    "SupervisedFineTuning",
]
