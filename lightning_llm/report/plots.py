"""Figures as inline PNG data: URIs (matplotlib's object API with the Agg canvas: no pyplot, no global backend)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

Series = Sequence[tuple[float, float]]
Mark = tuple[float, float, str]  # x, y, label


HEIGHT = 3.6  # inches, every figure
# Margins in inches for line plots (short numeric tick labels): fixed margins draw a figure once, where
# constrained layout measures every tick label first, which made each figure take about twice as long
LINE_MARGINS = {"left": 0.95, "right": 0.2, "top": 0.35, "bottom": 0.55}
# A legend goes below the axes, in columns, when it has more entries or longer ones than fit inside them: a
# sweep's jobs are named by their swept values ("optimizer.lr=0.001 model.n_embd=128 seed=2")
LEGEND_INSIDE_MAX = (6, 24)  # entries, characters
LEGEND_ROW, LEGEND_CHAR, LEGEND_HANDLE = 0.2, 0.065, 0.6  # inches: a row, a character (font "small"), a handle


def _figure(
    title: str,
    xlabel: str,
    ylabel: str,
    width: float = 7.0,
    margins: dict[str, float] | None = None,
    height: float = HEIGHT,
) -> tuple[Any, Any]:
    """A figure with one axes: margins in inches, or constrained layout (names as tick labels) without them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=None if margins else "constrained")
    if margins:
        fig.subplots_adjust(
            left=margins["left"] / width,
            right=1 - margins["right"] / width,
            top=1 - margins["top"] / height,
            bottom=margins["bottom"] / height,
        )
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _data_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def line_figure(
    curves: dict[str, Series], title: str, xlabel: str, ylabel: str, marks: Sequence[Mark] = (), logy: bool = False
) -> Any:
    """Curves (label -> [(x, y)]) and marked points as a matplotlib Figure; None when there is nothing to draw.
    A legend of many or long labels goes below the axes (the figure grows by its rows)."""
    curves = {label: list(points) for label, points in curves.items() if points}
    if not curves and not marks:
        return None
    labels = [*curves, *(label for _, _, label in marks)]
    below = len(labels) > 1 and (len(labels) > LEGEND_INSIDE_MAX[0] or max(map(len, labels)) > LEGEND_INSIDE_MAX[1])
    width = 7.0
    columns = max(1, int((width - 0.4) // (LEGEND_CHAR * max(map(len, labels)) + LEGEND_HANDLE)))
    legend_height = LEGEND_ROW * math.ceil(len(labels) / columns) + 0.1 if below else 0.0
    margins = {**LINE_MARGINS, "bottom": LINE_MARGINS["bottom"] + legend_height}
    fig, ax = _figure(title, xlabel, ylabel, width, margins, HEIGHT + legend_height)
    for label, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=label, marker="." if len(points) < 30 else None, linewidth=1.2)
    for x, y, label in marks:
        ax.scatter([x], [y], marker="*", s=120, zorder=3, label=label)
    if logy and all(y > 0 for points in curves.values() for _, y in points):
        ax.set_yscale("log")
    if below:
        fig.legend(loc="lower center", ncols=columns, fontsize="small", frameon=False)
    elif len(labels) > 1:
        ax.legend(fontsize="small")
    return fig


def line_plot(
    curves: dict[str, Series], title: str, xlabel: str, ylabel: str, marks: Sequence[Mark] = (), logy: bool = False
) -> str | None:
    """`line_figure` as one PNG; None when there is nothing to draw."""
    fig = line_figure(curves, title, xlabel, ylabel, marks, logy)
    return None if fig is None else _data_uri(fig)


def numeric_scatter(points: Sequence[tuple[float, float]], title: str, xlabel: str, ylabel: str) -> str:
    """y against a numeric hyperparameter: every run a dot, the mean per value a line (log x when it spans 10x)."""
    fig, ax = _figure(title, xlabel, ylabel, width=5.0)
    xs, ys = zip(*points, strict=True)
    ax.scatter(xs, ys, alpha=0.7)
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    keys = sorted(by_x)
    ax.plot(keys, [sum(by_x[k]) / len(by_x[k]) for k in keys], color="gray", linewidth=1, label="mean")
    ax.legend(fontsize="small")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    return _data_uri(fig)


def strip_plot(groups: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> str:
    """y for each value of a categorical hyperparameter: the runs as jittered dots, the mean as a bar."""
    fig, ax = _figure(title, xlabel, ylabel, width=5.0)
    for i, (_, ys) in enumerate(groups.items()):
        jitter = [((j % 5) - 2) * 0.04 for j in range(len(ys))]  # deterministic: the same report every time
        ax.scatter([i + d for d in jitter], ys, alpha=0.7)
        ax.hlines(sum(ys) / len(ys), i - 0.25, i + 0.25, color="gray")
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 4 else 0)
    return _data_uri(fig)


def bar_plot(values: dict[str, float], title: str, ylabel: str) -> str | None:
    """One bar per name (e.g. parameter importances); None when empty."""
    if not values:
        return None
    fig, ax = _figure(title, "", ylabel, width=5.0)
    ax.bar(list(values), list(values.values()))
    ax.tick_params(axis="x", labelrotation=20)
    return _data_uri(fig)
