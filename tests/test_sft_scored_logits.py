"""Decoder SFT computes the LM head and the cross-entropy only where there are labels (the responses): the loss,
its gradients and the validation perplexity equal those of the full logits; the head never sees the prompts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchmetrics.text import Perplexity

from lightning_llm.models import ModelConfig
from lightning_llm.models.gpt.model import GPT
from lightning_llm.objectives import IGNORE_INDEX, ObjectiveContext, SupervisedFineTuning
from lightning_llm.objectives.base import token_cross_entropy
from lightning_llm.tokenizers.trained import CharTokenizer

VOCAB = ["<pad>", "<unk>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz .,"]
PAIRS = [("the cat sat on", "mat"), ("a", "long answer here"), ("hello there, how are you", "fine"), ("x", "y")]
CHATS = [
    {"chat_ids": [5, 6, 7, 8, 9, 10], "chat_trained": [0, 0, 1, 1, 0, 1]},
    {"chat_ids": [11, 12, 13], "chat_trained": [0, 1, 1]},
]


class Wrapper(nn.Module):
    """A wrapper that does not pass the hint on (as a strategy's might): it gives the logits of every position."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)


def setup(tie: bool = False) -> tuple[GPT, SupervisedFineTuning]:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=len(VOCAB), block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, positions="rope",
        norm="rmsnorm", gated=True, activation="silu", bias=False, tie_embeddings=tie,
    )  # fmt: skip
    model = GPT(config).double()
    objective = SupervisedFineTuning()
    objective.configure(ObjectiveContext(model=model, tokenizer=CharTokenizer(VOCAB)))
    return model, objective


def batch_of(objective: SupervisedFineTuning, chat: bool = False) -> dict[str, torch.Tensor]:
    tok = objective.tokenizer
    if chat:
        return objective.collate(CHATS)
    return objective.collate([{"prompt_ids": tok.encode(p), "response_ids": tok.encode(r)} for p, r in PAIRS])


def full_loss_and_grads(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    logits = model(batch["input_ids"])
    loss = token_cross_entropy(logits, batch["labels"])
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("tie", "chat"), [(False, False), (True, False), (False, True)])
def test_the_loss_and_gradients_equal_the_full_logits(tie, chat):
    model, objective = setup(tie)
    batch = batch_of(objective, chat)
    labels = batch["labels"]
    assert (labels == IGNORE_INDEX).any(dim=1).all() and (batch["input_ids"] == 0).any(), "prompts and pads"
    expected, expected_grads = full_loss_and_grads(model, batch)
    for runner in (model, Wrapper(model)):  # the model takes the hint; a wrapper gives every position
        model.zero_grad()
        out = objective.forward(runner, batch)
        out.loss.backward()
        scored = int((labels != IGNORE_INDEX).sum())
        assert out.logits.shape == (1, scored, len(VOCAB)) and out.labels.shape == (1, scored)
        assert out.rows == labels.size(0)
        torch.testing.assert_close(out.loss.detach(), expected, atol=1e-6, rtol=0)
        for p, g in zip(model.parameters(), expected_grads, strict=True):
            torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=0)


def test_the_lm_head_runs_on_the_labelled_positions_only():
    model, objective = setup()
    batch = batch_of(objective)
    seen: list[tuple[int, ...]] = []
    model.lm_head.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape)))
    objective.forward(model, batch)
    scored = int((batch["labels"] != IGNORE_INDEX).sum())
    assert scored < batch["labels"].numel() / 2
    assert seen == [(scored, model.config.n_embd)]


def test_validation_perplexity_is_unchanged():
    model, objective = setup()
    batch = batch_of(objective)
    with torch.no_grad():
        full = Perplexity(ignore_index=IGNORE_INDEX).double()
        full.update(model(batch["input_ids"]), batch["labels"])
        scored = Perplexity(ignore_index=IGNORE_INDEX).double()
        out = objective.forward(model.eval(), batch)
        scored.update(out.logits, out.labels)
    torch.testing.assert_close(scored.compute(), full.compute(), atol=1e-9, rtol=0)


def test_per_row_loss_keeps_batch_first_logits():
    model, objective = setup()
    objective.per_row_loss = True  # DP-SGD: per-sample gradients need the batch axis
    batch = batch_of(objective)
    out = objective.forward(model, batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.labels.shape == batch["labels"].shape
