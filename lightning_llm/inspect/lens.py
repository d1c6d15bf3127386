"""The residual stream per layer, and the logit lens: each layer's stream read through the final norm and the
unembedding, as if the model stopped there (nostalgebraist, 2020). At the last layer it is the model's logits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_llm.models import LanguageModel
from lightning_llm.models.scoring import NotApplicable


@dataclass
class LogitLens:
    """Vocabulary log-probabilities (layers, time, vocab) of one sequence; layer 0 is the embeddings."""

    layers: list[str]
    logprobs: torch.Tensor


@contextmanager
def record_residuals(model: LanguageModel, stack: int = 0) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Within the block, a forward pass appends ("embeddings", the first block's input) and ("layer i", block
    i's output) of the model's `stack`-th layer stack (batch, time with any prefix, n_embd) to the yielded list."""
    blocks = model.layer_stacks()[stack]
    found: list[tuple[str, torch.Tensor]] = []

    def keep(name: str) -> Callable[..., None]:
        return lambda module, args, output: found.append((name, output))

    handles = [blocks[0].register_forward_pre_hook(lambda module, args: found.append(("embeddings", args[0])))]
    handles += [block.register_forward_hook(keep(f"layer {i}")) for i, block in enumerate(blocks)]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def unembedding(model: LanguageModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The final norm and output projection of a decoder-only model (`norm_f`, `lm_head`); NotApplicable for
    other architectures or a model with a task head."""
    norm, head = getattr(model, "norm_f", None), getattr(model, "lm_head", None)
    if model.architecture != "decoder" or model.task_head is not None:
        what = "a classifier" if model.task_head is not None else f"an {model.architecture} model"
        raise NotApplicable(f"the logit lens reads a decoder-only model's next-token predictions; this is {what}")
    if not isinstance(norm, nn.Module) or not isinstance(head, nn.Module):
        raise NotApplicable(f"{type(model).__name__} has no norm_f and lm_head to read its layers through")
    return lambda hidden: head(norm(hidden))


@torch.no_grad()
def logit_lens(model: LanguageModel, input_ids: torch.Tensor) -> LogitLens:
    """Every layer's residual stream through the final norm and unembedding, for one sequence (1, time)."""
    unembed = unembedding(model)
    with record_residuals(model) as streams:
        model(input_ids)
    n = model.prefix_length
    logits = torch.stack([unembed(hidden[0, n:]) for _, hidden in streams]).float()
    return LogitLens([name for name, _ in streams], logits.log_softmax(-1).cpu())


def top_tokens(lens: LogitLens, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely tokens per layer and position: (ids, probabilities), each (layers, time, k)."""
    logprobs, ids = lens.logprobs.topk(k, dim=-1)
    return ids, logprobs.exp()


def next_token_rank(lens: LogitLens, input_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """For each layer and position i < time-1, the rank (0 = top) and probability of the true token i+1."""
    target = torch.tensor(input_ids[1:]).view(1, -1, 1).expand(len(lens.layers), -1, 1)
    logprobs = lens.logprobs[:, :-1]
    own = logprobs.gather(-1, target)
    rank = (logprobs > own).sum(-1)
    return rank, own.squeeze(-1).exp()


def lens_rows(lens: LogitLens, labels: list[str], decode: Callable[[int], str], k: int = 5) -> list[dict[str, Any]]:
    """The top-k table: one row per layer and position (position, its token, layer, top tokens with probs)."""
    ids, probs = top_tokens(lens, k)
    return [
        {
            "layer": layer,
            "position": t,
            "token": labels[t],
            "top": [(decode(int(i)), float(p)) for i, p in zip(ids[li, t], probs[li, t], strict=True)],
        }
        for li, layer in enumerate(lens.layers)
        for t in range(ids.size(1))
    ]
