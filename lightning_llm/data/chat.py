"""Conversations as training text: chat messages rendered with a Jinja chat template (the tokenizer's own, a named
one, or Jinja text), split into the turns a model is trained on (the assistant's) and the rest.

Messages are `{"role", "content"}` dicts (OpenAI/TRL) or ShareGPT's `{"from", "value"}` (`human`, `gpt`, `system`).
A turn's text is what the template adds for it: the prompt is the conversation rendered up to the turn with the
generation prompt, the reply what rendering the turn as well adds to that, so the model learns exactly the text it
is asked to continue at inference (`lightning-llm chat` renders the same way).
"""

from __future__ import annotations

from typing import Any

from lightning_llm.errors import ConfigError

#: Templates by name, for tokenizers without one of their own (ours): `plain` is what `lightning-llm chat` uses then
TEMPLATES = {
    "plain": (
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
        "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
        "{% else %}Assistant: {{ message['content'] }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def template_source(own: str | None, named: str | None) -> str:
    """`data.chat_template` (a name of TEMPLATES, or Jinja text), else the tokenizer's own, else `plain`."""
    if named:
        return TEMPLATES.get(named, named)
    return own or TEMPLATES["plain"]


def special_strings(tokenizer: Any) -> dict[str, str]:
    """The bos/eos strings a template may use."""
    special = getattr(tokenizer, "special", {})
    return {"bos_token": special.get("bos") or "<s>", "eos_token": special.get("eos") or "</s>"}


def render(source: str, messages: list[dict[str, str]], special: dict[str, str], add_generation_prompt: bool) -> str:
    """`messages` through the template, as transformers' apply_chat_template renders it (a Jinja sandbox)."""
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    try:
        template = env.from_string(source)
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
    except TemplateError as err:
        raise ConfigError(f"the chat template cannot render the conversation: {err}") from err


def messages_of(value: Any, column: str) -> list[dict[str, str]]:
    """A column's conversation as `{role, content}` messages (ShareGPT's `{from, value}` converted)."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise ConfigError(f"column {column!r} holds {type(value).__name__} values, not lists of chat messages")
    messages = []
    for message in value:
        role = message.get("role") or _SHAREGPT_ROLES.get(str(message.get("from")))
        content = message.get("content", message.get("value"))
        content = message.get("value") if content is None else content
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ConfigError(
                f"column {column!r} has a message {message!r}: each needs role (system, user, assistant) and content "
                "(or ShareGPT's from: human/gpt/system and value)"
            )
        messages.append({"role": role, "content": content})
    return messages


def prompt_and_reply(
    source: str, prompt: list[dict[str, str]], reply: dict[str, str], special: dict[str, str]
) -> tuple[str, str]:
    """(the conversation up to the reply, with the generation prompt; the text the reply adds to it)."""
    before = render(source, prompt, special, add_generation_prompt=True)
    through = render(source, [*prompt, reply], special, add_generation_prompt=False)
    if not through.startswith(before):
        raise ConfigError(
            "the chat template does not render a reply after its generation prompt: name another with "
            "data.chat_template"
        )
    return before, through[len(before) :]


def turns(source: str, messages: list[dict[str, str]], special: dict[str, str]) -> list[tuple[str, bool]]:
    """The rendered conversation as consecutive (text, is an assistant reply) pieces."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, reply = prompt_and_reply(source, messages[:i], message, special)
        if not before.startswith(done):
            raise ConfigError(
                "the chat template does not render a conversation turn by turn (a later turn changes the text of an "
                "earlier one): name another with data.chat_template"
            )
        pieces += [(before[len(done) :], False), (reply, True)]
        done = before + reply
    rest = render(source, messages, special, add_generation_prompt=False)[len(done) :]
    return [piece for piece in [*pieces, (rest, False)] if piece[0]]
