"""The toy family: no Hugging Face mapping (converter None); the decoder scorer every decoder can share."""

from lightning_llm.models import Family
from lightning_llm.models.gpt.score import DecoderEvalLM
from tests.toy_family.model import ParallelDecoder

FAMILY = Family(name="toy", model_class=ParallelDecoder, base_objective="clm", scorer=DecoderEvalLM)
