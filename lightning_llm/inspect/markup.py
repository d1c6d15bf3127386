"""The HTML of an inspection report: one self-contained page (inline CSS, images as relative files, no
external URL), so it opens offline from its folder."""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #111; }
h1, h2, h3 { font-weight: 600; } section { margin-bottom: 2.5em; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.attr { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; margin: 0.3em 0 1em; }
.tok { border-radius: 3px; padding: 1px 0; } .note { color: #555; font-style: italic; }
.scroll { overflow-x: auto; }
"""


class Raw(str):
    """Markup that `table` inserts as it is (everything else is escaped)."""


def cell(value: object) -> str:
    """One table cell: numbers right-aligned to 4 significant digits, None as n/a, text escaped."""
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{'n/a' if value is None else html.escape(str(value))}</td>"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table (horizontally scrollable when wide)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(cell(v) for v in row)}</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def write_csv(path: Path, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """The same rows as a CSV file beside the page."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def image(path: Path, alt: str) -> str:
    """An image by its file name (relative to the page)."""
    return f'<img src="{html.escape(path.name)}" alt="{html.escape(alt)}">'


def paragraph(text: str, note: bool = False) -> str:
    """A paragraph of escaped text (greyed as a note)."""
    return f"<p{' class=note' if note else ''}>{html.escape(text)}</p>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole document: a title, then (heading, body markup) sections."""
    body = "".join(f"<section><h2>{html.escape(h)}</h2>{content}</section>" for h, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
