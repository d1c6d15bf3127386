"""Training objectives: collation, labels and loss for each way of training a model."""

from lightning_llm.objectives.base import IGNORE_INDEX, Objective, ObjectiveOutput
from lightning_llm.objectives.clm import CausalLM

__all__ = ["IGNORE_INDEX", "CausalLM", "Objective", "ObjectiveOutput"]
