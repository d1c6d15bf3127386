"""SFT on conversations: chat messages (and ShareGPT's) rendered with a chat template, the loss on the assistant's
turns only; a model that is not a decoder is refused in one line."""

from __future__ import annotations

import json

import pytest

from lightning_llm.data.chat import TEMPLATES, turns
from lightning_llm.errors import ConfigError
from lightning_llm.objectives import IGNORE_INDEX
from lightning_llm.recipe import TrainingRecipe, train

from .conftest import TINY, compose_config

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "user", "content": "bye"},
    {"role": "assistant", "content": "ciao"},
]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
SHORT = (
    "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}a:{% endif %}"
)


def test_a_conversation_is_cut_into_the_turns_the_template_renders():
    assert turns(TEMPLATES["plain"], CONVERSATION, SPECIAL) == [
        ("Be brief.\n\nUser: hi\nAssistant:", False),
        (" hello\n", True),
        ("User: bye\nAssistant:", False),
        (" ciao\n", True),
    ]
    pieces = turns(TEMPLATES["chatml"], CONVERSATION, SPECIAL)
    assert [text for text, trained in pieces if trained] == ["hello<|im_end|>\n", "ciao<|im_end|>\n"]
    assert "".join(text for text, _ in pieces).endswith("<|im_start|>assistant\nciao<|im_end|>\n")


@pytest.mark.parametrize("format", ["messages", "sharegpt"])
def test_only_the_assistant_turns_are_labels(base_checkpoints, cache_dir, tmp_path, format):
    path = tmp_path / "chats.jsonl"
    with path.open("w") as f:
        for i in range(20):
            replies = iter([f"ok{i}", f"no{i}"])
            messages = [m if m["role"] == "user" else {**m, "content": next(replies)} for m in CONVERSATION[1:]]
            if format == "sharegpt":
                roles = {"user": "human", "assistant": "gpt"}
                row = {"conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in messages]}
            else:
                row = {"messages": messages}
            f.write(json.dumps(row) + "\n")
    column = "conversations" if format == "sharegpt" else "messages"
    args = [
        *TINY,
        f"model.pretrained={base_checkpoints['gpt']}",
        "objective=sft",
        "data=chat",
        f"data.path={path}",
        f"data.messages_column={column}",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "~callbacks.sample",
    ]
    cfg = compose_config(args, tmp_path / "run", cache_dir)
    cfg.data.chat_template = SHORT  # Jinja text: the conversation fits the tiny model's 32 tokens
    recipe = TrainingRecipe(cfg)
    recipe.check()
    for stage in recipe.stages()[:3]:  # the pretrained model, the data, the model
        stage()
    tokenizer = recipe.datamodule.tokenizer
    batch = recipe.datamodule.first_train_rows(1)
    labels = batch["labels"][0]
    said = tokenizer.decode([t for t in labels.tolist() if t not in (IGNORE_INDEX, tokenizer.eos_id)]).split()
    assert len(said) == 2 and said[0][:2] == "ok" and said[1] == f"no{said[0][2:]}"  # both replies, nothing else
    assert labels[labels != IGNORE_INDEX][-1] == tokenizer.eos_id
    cfg = compose_config(args, tmp_path / "trained", cache_dir)
    cfg.data.chat_template = SHORT
    assert train(cfg)["status"] == "completed"


def test_conversations_train_decoders_only(make_cfg):
    with pytest.raises(ConfigError, match="data.messages_column trains a decoder") as err:
        TrainingRecipe(make_cfg("model=t5", "objective=sft", "data=chat", "data.path=chats.jsonl")).check()
    assert "\n" not in str(err.value)
