"""The GPT family: decoder-only models (GPT-2 and Llama-style), pretrained with causal LM."""

from lightning_llm.models.family import Family
from lightning_llm.models.gpt.convert import GPTConverter
from lightning_llm.models.gpt.model import GPT
from lightning_llm.models.gpt.score import DecoderEvalLM

FAMILY = Family(name="gpt", model_class=GPT, base_objective="clm", scorer=DecoderEvalLM, converter=GPTConverter())
