"""The T5 family: encoder-decoders, pretrained with span corruption."""

from lightning_llm.models.family import Family
from lightning_llm.models.t5.convert import T5Converter
from lightning_llm.models.t5.model import T5
from lightning_llm.models.t5.score import Seq2SeqEvalLM

FAMILY = Family(name="t5", model_class=T5, base_objective="span", scorer=Seq2SeqEvalLM, converter=T5Converter())
