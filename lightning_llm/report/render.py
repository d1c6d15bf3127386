"""One document, two renderings: Markdown (text, figures named) and self-contained HTML (figures inline)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; }
.status-completed { color: #1a7f37; } .status-failed, .status-diverged { color: #c62828; }
.status-partial, .status-interrupted { color: #b26a00; }
"""


def fmt(value: Any) -> str:
    """A cell: floats to 6 significant digits, ints with no separators, None empty, an empty list `none`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "none"
    return str(value)


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


class Document:
    """A report built section by section, written as `<stem>.md` and `<stem>.html`."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{html.escape(text)}</p>")

    def status(self, status: str, error: str | None) -> None:
        """The run's status line, and its error when there is one."""
        self.md += [f"**status: {status}**", ""]
        self.html.append(
            f'<p><b>status: <span class="status-{html.escape(status)}">{html.escape(status)}</span></b></p>'
        )
        if error:
            self.preformatted(error)

    def preformatted(self, text: str) -> None:
        self.md += ["```", text, "```", ""]
        self.html.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        self.md.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
        self.md.append("|" + "---|" * len(headers))
        self.md += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        self.md.append("")
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def mapping(self, data: dict[str, Any], headers: tuple[str, str] = ("key", "value")) -> None:
        """A two-column table of a flat dict (nested dicts as dotted keys)."""
        self.table(headers, list(_dotted(data).items()))

    def figure(self, png_data_uri: str | None, caption: str) -> None:
        """An inline PNG (a data: URI) with its caption; the Markdown names it (the figure is in the HTML)."""
        if png_data_uri is None:
            return
        self.md += [f"*Figure: {caption} (in report.html)*", ""]
        alt = html.escape(caption, quote=True)
        self.html.append(f'<figure><img src="{png_data_uri}" alt="{alt}"><figcaption>{alt}</figcaption></figure>')

    def write(self, folder: Path, stem: str = "report") -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md, page = folder / f"{stem}.md", folder / f"{stem}.html"
        md.write_text("\n".join(self.md).rstrip() + "\n", encoding="utf-8")
        body = "\n".join(self.html)
        page.write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
            encoding="utf-8",
        )
        return [md, page]


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
