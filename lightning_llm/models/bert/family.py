"""The BERT family: bidirectional encoders, pretrained with masked LM."""

from lightning_llm.models.bert.convert import BERTConverter
from lightning_llm.models.bert.model import BERT
from lightning_llm.models.bert.score import MaskedEvalLM
from lightning_llm.models.family import Family

FAMILY = Family(name="bert", model_class=BERT, base_objective="mlm", scorer=MaskedEvalLM, converter=BERTConverter())
