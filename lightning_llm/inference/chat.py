"""Chat templates: a checkpoint's own (Hugging Face `chat_template`, rendered with Jinja in a sandbox as
transformers does) or a plain one for models that have none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_llm.errors import ConfigError

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% else %}Assistant: {{ message['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
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
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        try:
            template = env.from_string(self.source)
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
        except TemplateError as err:
            raise ConfigError(f"the chat template cannot render this conversation: {err}") from err


def chat_template(own: str | None, override: str | None) -> ChatTemplate:
    """The configured template, else the checkpoint's own, else the plain one."""
    if override:
        return ChatTemplate(override)
    if own:
        return ChatTemplate(own)
    return ChatTemplate(PLAIN_TEMPLATE, PLAIN_STOPS, plain=True)
