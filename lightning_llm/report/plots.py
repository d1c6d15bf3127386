"""Figures as inline PNG data: URIs (matplotlib's object API with the Agg canvas: no pyplot, no global backend)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

Series = Sequence[tuple[float, float]]
Mark = tuple[float, float, str]  # x, y, label


HEIGHT = 3.6  # inches, every figure
# Margins in inches for line plots (short numeric tick labels): fixed margins draw a figure once, where
# constrained layout measures every tick label first, which made each figure take about twice as long
LINE_MARGINS = {"left": 0.95, "right": 0.2, "top": 0.35, "bottom": 0.55}


def _figure(
    title: str, xlabel: str, ylabel: str, width: float = 7.0, margins: dict[str, float] | None = None
) -> tuple[Any, Any]:
    """A figure with one axes: margins in inches, or constrained layout (names as tick labels) without them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, HEIGHT), dpi=100, layout=None if margins else "constrained")
    if margins:
        fig.subplots_adjust(
            left=margins["left"] / width,
            right=1 - margins["right"] / width,
            top=1 - margins["top"] / HEIGHT,
            bottom=margins["bottom"] / HEIGHT,
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


def line_plot(
    curves: dict[str, Series], title: str, xlabel: str, ylabel: str, marks: Sequence[Mark] = (), logy: bool = False
) -> str | None:
    """Curves (label -> [(x, y)]) and marked points as one PNG; None when there is nothing to draw."""
    curves = {label: list(points) for label, points in curves.items() if points}
    if not curves and not marks:
        return None
    fig, ax = _figure(title, xlabel, ylabel, margins=LINE_MARGINS)
    for label, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=label, marker="." if len(points) < 30 else None, linewidth=1.2)
    for x, y, label in marks:
        ax.scatter([x], [y], marker="*", s=120, zorder=3, label=label)
    if logy and all(y > 0 for points in curves.values() for _, y in points):
        ax.set_yscale("log")
    if len(curves) + len(marks) > 1:
        ax.legend(fontsize="small", ncols=1 + len(curves) // 12)
    return _data_uri(fig)


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
