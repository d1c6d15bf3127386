"""Pipeline stages: a model's layers cut into consecutive runs, one per stage (`LanguageModel.pipeline_stages`).

A stage is an nn.Module over the model's own modules (shared, not copied): the first opens with the
embeddings (token ids -> hidden states), the last closes with the final norm and the head (hidden states ->
the logits `forward` gives for every position), and each passes one activation, (batch, time, n_embd), on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_llm.models.blocks import run_block


def layer_cuts(n_layers: int, n_stages: int) -> list[range]:
    """Consecutive runs of layers, one per stage, as even as they come (earlier stages take the remainder's
    extra layers: the last stage also runs the head)."""
    size, extra = divmod(n_layers, n_stages)
    starts = [i * size + min(i, extra) for i in range(n_stages + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(n_stages)]


class Stage(nn.Module):
    """One stage: `embed` (first stage only) -> its blocks -> `head` (last stage only).

    `embed_modules` and `head_modules` are the modules `embed` and `head` use: registered here, so the stage's
    parameters are exactly the ones it trains (the schedule scales and the optimizer steps these).
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        embed_modules: Sequence[nn.Module | None] = (),
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        head_modules: Sequence[nn.Module | None] = (),
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.embed_modules = nn.ModuleList(m for m in embed_modules if m is not None)
        self.head_modules = nn.ModuleList(m for m in head_modules if m is not None)
        self.embed, self.head, self.checkpointing = embed, head, checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        for block in self.blocks:
            x = run_block(block, self.checkpointing, x)
        return self.head(x) if self.head is not None else x


def cut_stages(
    blocks: nn.ModuleList,
    n_stages: int,
    embed: Callable[[torch.Tensor], torch.Tensor],
    embed_modules: Sequence[nn.Module | None],
    head: Callable[[torch.Tensor], torch.Tensor],
    head_modules: Sequence[nn.Module | None],
    checkpointing: bool = False,
) -> list[Stage]:
    """A stack of blocks cut into `n_stages` stages (`layer_cuts`), the embeddings on the first and the head on
    the last (one stage holds both when there is one)."""
    cuts = layer_cuts(len(blocks), n_stages)
    return [
        Stage(
            [blocks[i] for i in layers],
            embed if index == 0 else None,
            embed_modules if index == 0 else (),
            head if index == n_stages - 1 else None,
            head_modules if index == n_stages - 1 else (),
            checkpointing,
        )
        for index, layers in enumerate(cuts)
    ]
