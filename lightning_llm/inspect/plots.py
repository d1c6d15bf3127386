"""The figures of an inspection, drawn with matplotlib's object API on the Agg canvas (no pyplot state, no
display) and written as PNG files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from lightning_llm.inspect.probes import ProbeResult


def axis_label(token: str) -> str:
    """A token as a tick label: spaces as middle dots, newlines and tabs escaped."""
    return token.replace(" ", "\u00b7").replace("\n", "\\n").replace("\t", "\\t")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _token_ticks(ax: Any, x_labels: list[str], y_labels: list[str], y_tokens: bool = True) -> None:
    size = max(4.0, min(9.0, 400 / max(len(x_labels), len(y_labels), 1)))
    ax.set_xticks(range(len(x_labels)), [axis_label(t) for t in x_labels], rotation=90, fontsize=size)
    ax.set_yticks(range(len(y_labels)), [axis_label(t) if y_tokens else t for t in y_labels], fontsize=size)


def attention_figure(
    probs: torch.Tensor, query_labels: list[str], key_labels: list[str], title: str, path: Path
) -> Path:
    """One layer's attention (heads, queries, keys): a heatmap per head, queries down, keys across."""
    heads = probs.size(0)
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)
    side = max(3.0, min(8.0, 0.22 * len(key_labels) + 1.5))
    fig = _figure(side * cols, side * rows + 0.4)
    fig.suptitle(title)
    for h in range(heads):
        ax = fig.add_subplot(rows, cols, h + 1)
        image = ax.imshow(probs[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(f"head {h}", fontsize=9)
        _token_ticks(ax, key_labels, query_labels)
    fig.colorbar(image, ax=fig.axes, shrink=0.6, label="attention probability")
    fig.savefig(path)
    return path


def lens_figure(
    probability: torch.Tensor, rank: torch.Tensor, layers: list[str], labels: list[str], path: Path
) -> Path:
    """The logit lens on the true next token: its probability (left) and rank (right) per layer (rows) and
    position (columns, labelled with the token to predict)."""
    width = max(6.0, min(24.0, 0.35 * len(labels) + 3))
    fig = _figure(width, 0.8 * len(layers) + 2.5)
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    image = top.imshow(probability.numpy(), cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=top, label="p")
    image = bottom.imshow(torch.log10(rank.float() + 1).numpy(), cmap="magma_r", aspect="auto")
    fig.colorbar(image, ax=bottom, label="log10(rank + 1)")
    if rank.numel() <= 600:  # write the small ranks into their cells
        for row, col in (rank < 100).nonzero().tolist():
            value = int(rank[row, col])
            colour = "black" if value < 10 else "white"  # light cells (small ranks) get dark digits
            bottom.text(col, row, str(value), ha="center", va="center", fontsize=7, color=colour)
    for ax, title in ((top, "probability of the next token"), (bottom, "rank of the next token (0 = top)")):
        ax.set_title(title, fontsize=10)
        _token_ticks(ax, labels, layers, y_tokens=False)
    fig.savefig(path)
    return path


def probe_figure(result: ProbeResult, path: Path) -> Path:
    """Probe test accuracy per layer, with train accuracy and the majority-class baseline."""
    fig = _figure(max(5.0, 0.5 * len(result.layers) + 2), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(result.layers))
    ax.plot(x, result.accuracy, marker="o", label="test")
    ax.plot(x, result.train_accuracy, marker=".", linestyle=":", label="train")
    ax.axhline(result.majority, color="grey", linestyle="--", label="majority class")
    ax.set_xticks(list(x), result.layers, rotation=45, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"linear probe per layer ({len(result.classes)} classes, {result.n_test} test rows)")
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path
