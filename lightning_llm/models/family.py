"""A model family: its model and everything other packages need to know about it, in one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_llm.models.base import Architecture, LanguageModel
from lightning_llm.models.blocks import ModelConfig

if TYPE_CHECKING:
    from lightning_llm.models.hf_mapping import HFConverter
    from lightning_llm.models.scoring import EvalLM


@dataclass(frozen=True)
class Family:
    """What a family provides. A new family is one folder (model.py, family.py; convert.py and score.py as
    it needs) plus a YAML in conf/model/, registered in `lightning_llm.models.registry`."""

    name: str
    model_class: type[LanguageModel]
    base_objective: str  # the conf/objective option it is pretrained with (forgetting is measured with it)
    scorer: type[EvalLM]  # how evaluation scores and generates text with it
    converter: HFConverter | None = None  # its Hugging Face checkpoints, both ways (None: no interop)

    @property
    def architecture(self) -> Architecture:
        return self.model_class.architecture

    def build(self, config: dict[str, Any] | ModelConfig) -> LanguageModel:
        """A freshly initialised model with `config` (a ModelConfig or its dict)."""
        if not isinstance(config, ModelConfig):
            config = ModelConfig.from_kwargs(dict(config))
        return self.model_class(config)
