"""Which input tokens a chosen output depends on: gradient x input and integrated gradients (Captum) on the
token embeddings, summed over the embedding dimension, shown as coloured text.

The model runs from embeddings through a forward hook on `input_embeddings()` that hands back the given
embeddings when the table is called with the prompt's id tensor (positions, segments and any prefix are
added by the model as usual; a T5 decoder's own embedding lookup is left alone). The baseline is the pad
token's embedding at every position (Captum's usual reference for text), or all-zero embeddings; completeness
reads: sum of integrated gradients = f(input) - f(baseline) + delta. With RMSNorm and no learned positions a
zero baseline is a poor one: the first norm jumps near zero and the integral needs hundreds of steps.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from lightning_llm.extras import require
from lightning_llm.inspect.prompts import forward
from lightning_llm.models import LanguageModel
from lightning_llm.models.scoring import NotApplicable

Score = Callable[[torch.Tensor], torch.Tensor]  # input ids (n, time) -> the chosen output (n,)


@dataclass
class Attribution:
    """Per-token attributions of one output of one sequence."""

    target: int  # the token id (decoders, encoder-decoders) or class (a task head) explained
    input_x_gradient: torch.Tensor  # (time,)
    integrated_gradients: torch.Tensor  # (time,)
    delta: float  # Captum's convergence delta: sum(attributions) - (f(input) - f(baseline))
    output: float  # f(input)
    baseline_output: float  # f(baseline)


def score_function(model: LanguageModel, target: int) -> Score:
    """The output to explain: class `target`'s logit of a model with a task head, else the logit of token
    `target` next after the prompt (a decoder) or first from the decoder (an encoder-decoder)."""
    if model.task_head is not None:
        return lambda ids: forward(model, ids)[:, target]
    return lambda ids: forward(model, ids)[:, -1, target]


def default_target(model: LanguageModel, input_ids: torch.Tensor) -> int:
    """The model's own top choice: its class, or the token it predicts next (first, for an encoder-decoder)."""
    with torch.no_grad():
        out = forward(model, input_ids)
    return int((out if model.task_head is not None else out[:, -1]).argmax(-1)[0])


@contextmanager
def from_embeddings(model: LanguageModel, input_ids: torch.Tensor, score: Score) -> Iterator[Score]:
    """Within the block, the yielded f(token embeddings (n, time, dim)) = score of the prompt with those
    embeddings in place of its tokens' (n copies of `input_ids`, shape (1, time))."""
    current: dict[str, torch.Tensor] = {}

    def replace(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return current["embeds"] if current and args[0] is current["ids"] else None

    def f(embeds: torch.Tensor) -> torch.Tensor:
        current["ids"], current["embeds"] = input_ids.expand(embeds.size(0), -1), embeds
        try:
            return score(current["ids"])
        finally:
            current.clear()

    handle = model.input_embeddings().register_forward_hook(replace)
    try:
        yield f
    finally:
        handle.remove()


def attribute(
    model: LanguageModel,
    input_ids: torch.Tensor,
    target: int | None = None,
    baseline_id: int | None = None,
    n_steps: int = 64,
) -> Attribution:
    """Gradient x input and integrated gradients (`n_steps`, Gauss-Legendre) of `target`'s score (default: the
    model's own top choice) for one sequence (1, time), from the embedding of `baseline_id` at every position
    (None: zeros)."""
    require("captum", "token attributions (lightning-llm inspect)")
    from captum.attr import InputXGradient, IntegratedGradients

    if model.task_head is None and model.architecture == "encoder":
        raise NotApplicable("attributions explain a next token or a class: this encoder has no task head")
    target = default_target(model, input_ids) if target is None else target
    score = score_function(model, target)
    embeds = model.input_embeddings()(input_ids).detach().requires_grad_()
    if baseline_id is None:
        baseline = torch.zeros_like(embeds)
    else:
        baseline = model.input_embeddings()(torch.full_like(input_ids, baseline_id)).detach()
    with torch.enable_grad(), from_embeddings(model, input_ids, score) as f:
        ixg = InputXGradient(f).attribute(embeds)
        ig, delta = IntegratedGradients(f).attribute(
            embeds, baselines=baseline, n_steps=n_steps, return_convergence_delta=True
        )
        with torch.no_grad():
            outputs = f(torch.cat((embeds, baseline)))
    return Attribution(
        target,
        ixg.sum(-1)[0].detach().cpu(),
        ig.sum(-1)[0].detach().cpu(),
        float(delta[0]),
        float(outputs[0]),
        float(outputs[1]),
    )


def attribution_html(labels: list[str], scores: torch.Tensor) -> str:
    """The tokens as text, each on a background red (positive) or blue (negative) by its share of the largest
    |score|; the value shows on hover."""
    peak = float(scores.abs().max()) or 1.0
    spans = []
    for label, value in zip(labels, scores.tolist(), strict=True):
        alpha = abs(value) / peak
        colour = f"rgba(220,38,38,{alpha:.2f})" if value >= 0 else f"rgba(37,99,235,{alpha:.2f})"
        spans.append(f'<span class="tok" style="background:{colour}" title="{value:+.4g}">{html.escape(label)}</span>')
    return f'<div class="attr">{"".join(spans)}</div>'
