"""Training objectives: collation, labels and loss for each way of training a model."""

from lightning_llm.objectives.base import EXAMPLES, IGNORE_INDEX, Objective, ObjectiveContext, ObjectiveOutput
from lightning_llm.objectives.classify import SequenceClassification
from lightning_llm.objectives.clm import CausalLM
from lightning_llm.objectives.distill import Distillation, DistillationMixin, SupervisedDistillation
from lightning_llm.objectives.dpo import DirectPreference
from lightning_llm.objectives.grpo import GRPO
from lightning_llm.objectives.kto import KTO
from lightning_llm.objectives.mlm import MaskedLM
from lightning_llm.objectives.orpo import ORPO
from lightning_llm.objectives.preference import PreferenceObjective, Reference, ReferencedObjective
from lightning_llm.objectives.reward import RewardModel
from lightning_llm.objectives.sft import SupervisedFineTuning
from lightning_llm.objectives.simpo import SimPO
from lightning_llm.objectives.span import SpanCorruption

__all__ = [
    "EXAMPLES",
    "GRPO",
    "IGNORE_INDEX",
    "KTO",
    "ORPO",
    "CausalLM",
    "DirectPreference",
    "Distillation",
    "DistillationMixin",
    "MaskedLM",
    "Objective",
    "ObjectiveContext",
    "ObjectiveOutput",
    "PreferenceObjective",
    "Reference",
    "ReferencedObjective",
    "RewardModel",
    "SequenceClassification",
    "SimPO",
    "SpanCorruption",
    "SupervisedDistillation",
    "SupervisedFineTuning",
]
