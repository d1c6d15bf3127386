"""Using a trained model: load it (any checkpoint, optionally quantized), generate, chat."""

from lightning_llm.inference.chat import ChatTemplate, chat_template
from lightning_llm.inference.session import Completion, TextGenerator, completion_record, cut, load_for_inference

__all__ = [
    "ChatTemplate",
    "Completion",
    "TextGenerator",
    "chat_template",
    "completion_record",
    "cut",
    "load_for_inference",
]
