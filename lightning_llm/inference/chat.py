"""Chat templates at inference: a checkpoint's own (Hugging Face `chat_template`) or the plain one for models that
have none, rendered as training rendered them (`data.chat`: Jinja in a sandbox, as transformers does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_llm.data.chat import TEMPLATES, render

PLAIN_STOPS = ("\nUser:", "\nAssistant:")


@dataclass
class ChatTemplate:
    """A Jinja chat template and the strings that end an assistant turn."""

    source: str
    stops: tuple[str, ...] = ()
    plain: bool = False

    def render(
        self, messages: list[dict[str, str]], special: dict[str, Any], add_generation_prompt: bool = True
    ) -> str:
        """The prompt for `messages` ({role, content}), as transformers' apply_chat_template renders it."""
        return render(self.source, messages, special, add_generation_prompt)


def chat_template(own: str | None, override: str | None) -> ChatTemplate:
    """The configured template, else the checkpoint's own, else the plain one."""
    if override:
        return ChatTemplate(override)
    if own:
        return ChatTemplate(own)
    return ChatTemplate(TEMPLATES["plain"], PLAIN_STOPS, plain=True)
