"""Embedded corpora: English text that ships inside every CPython, so a fresh machine needs no download.

- `pydoc_topics`: the language reference topics behind `help()` (`pydoc_data.topics`, ~465k characters).
- `stdlib_docstrings`: the docstrings of the standard library's modules, one document per module
  (~1.5M characters).
- `python_docs`: both.

And one embedded task table, for fine-tuning:
- `stdlib_functions`: one row per documented standard-library function: its code without the docstring
  (`code`), the docstring's first line (`summary`), the whole docstring (`docstring`) and its top-level
  module (`module`). Code -> summary is a generation task; docstring -> module a classification task.
- `arithmetic`: "12+7=" -> "19" for every pair of operands up to 19, in a seeded order (`data.arithmetic`): a
  verifiable task for SFT, then GRPO with an exact-match reward.
- `stdlib_preferences`: the same functions as preference pairs (`prompt`, `chosen`, and two rejected responses,
  `shuffled` and `other`; see `synthetic.summary_pairs`).
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
import textwrap
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lightning_llm.data.arithmetic import arithmetic_problems
from lightning_llm.data.synthetic import fairness_hiring, fairness_occupations, summary_pairs
from lightning_llm.errors import ConfigError
from lightning_llm.files import atomic_path

EMBEDDED_PREFIX = "embedded:"
_SKIPPED_STDLIB_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}


def pydoc_topics() -> Iterator[dict[str, str]]:
    """One document per `help()` topic, in sorted order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"text": topics[name].strip(), "source": f"pydoc:{name}"}


def _module_document(relative: Path, tree: ast.Module) -> dict[str, str] | None:
    """A module's module, class and function docstrings as one document (None when it has none)."""
    docs = [
        doc
        for node in _statements(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (doc := ast.get_docstring(node))
    ]
    return {"text": "\n\n".join(docs), "source": f"stdlib:{relative.as_posix()}"} if docs else None


_HOLDS_STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)  # the nodes that can hold a statement


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """The module and its statements in `ast.walk`'s order (breadth first), without visiting expressions: no
    statement sits inside an expression, and expressions are most of a tree's nodes."""
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        queue.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, _HOLDS_STATEMENTS))
        yield node


def _stdlib_trees() -> Iterator[tuple[Path, ast.Module, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIPPED_STDLIB_DIRS.intersection(relative.parts):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            yield relative, ast.parse(source), source
        except (SyntaxError, UnicodeDecodeError):
            continue


def _function_rows(relative: Path, tree: ast.Module, source: str, max_code_chars: int) -> Iterator[dict[str, str]]:
    """A module's public, documented functions whose code (docstring removed) is short."""
    module = relative.parts[0].removesuffix(".py")
    lines = source.splitlines()
    for node in _statements(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if not doc or not doc.strip():
            continue
        if len(node.body) < 2:
            continue
        signature = lines[node.lineno - 1 : node.body[0].lineno - 1]  # the def line(s), up to the docstring
        code = textwrap.dedent("\n".join([*signature, *lines[node.body[1].lineno - 1 : node.end_lineno]]))
        if len(code) <= max_code_chars:
            yield {
                "code": code,
                "summary": doc.strip().splitlines()[0].strip(),
                "docstring": doc.strip(),
                "module": module,
                "source": f"stdlib:{relative.as_posix()}:{node.name}",
            }


def stdlib_functions(max_code_chars: int = 1200) -> Iterator[dict[str, str]]:
    """One row per public, documented standard-library function whose code (docstring removed) is short."""
    for relative, tree, source in _stdlib_trees():
        yield from _function_rows(relative, tree, source, max_code_chars)


def stdlib_corpora() -> dict[str, list[dict[str, str]]]:
    """`stdlib_docstrings` (one document per module), `stdlib_functions` and `stdlib_preferences` from one parse of
    the standard library: parsing its ~1,000 modules is most of their cost (about 5 s)."""
    corpora: dict[str, list[dict[str, str]]] = {"stdlib_docstrings": [], "stdlib_functions": []}
    for relative, tree, source in _stdlib_trees():
        if document := _module_document(relative, tree):
            corpora["stdlib_docstrings"].append(document)
        corpora["stdlib_functions"].extend(_function_rows(relative, tree, source, max_code_chars=1200))
    corpora["stdlib_preferences"] = list(summary_pairs(corpora["stdlib_functions"]))
    return corpora


# How each embedded corpus is built: a function returning it, or it and others that come from the same work
_BUILDERS: dict[str, Callable[[], dict[str, Iterable[dict[str, str]]]]] = {
    "pydoc_topics": lambda: {"pydoc_topics": pydoc_topics()},
    "stdlib_docstrings": stdlib_corpora,
    "stdlib_functions": stdlib_corpora,
    # preference pairs: a function's code -> its own summary (chosen), its words shuffled or another's (rejected)
    "stdlib_preferences": stdlib_corpora,
    # skewed synthetic data for fairness experiments (eval=fairness measures the skew a model picks up)
    "fairness_hiring": lambda: {"fairness_hiring": fairness_hiring("reference")},
    "fairness_occupations": lambda: {"fairness_occupations": ({"text": t} for t in fairness_occupations().reference)},
    # a verifiable task for SFT then GRPO: "12+7=" -> "19", every problem with operands up to 19, seeded order
    "arithmetic": lambda: {"arithmetic": arithmetic_problems()},
}
# Every embedded corpus: the built ones, whose files the others join in order
EMBEDDED_CORPORA: dict[str, tuple[str, ...]] = {name: (name,) for name in _BUILDERS} | {
    "python_docs": ("pydoc_topics", "stdlib_docstrings")
}


def is_embedded(path: str) -> bool:
    return path.startswith(EMBEDDED_PREFIX)


def materialize_embedded(path: str, cache_dir: str | os.PathLike) -> Path:
    """Write the embedded corpus named by `path` ("embedded:NAME") as JSON lines; return the file."""
    name = path.removeprefix(EMBEDDED_PREFIX)
    if name not in EMBEDDED_CORPORA:
        raise ConfigError(
            f"data.path={path!r} is not an embedded corpus: use one of "
            f"{[EMBEDDED_PREFIX + n for n in EMBEDDED_CORPORA]}"
        )
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    folder = Path(cache_dir) / "corpora"

    def file(corpus: str) -> Path:
        return folder / f"{corpus}-{version}.jsonl"

    out = file(name)
    if not out.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for part in EMBEDDED_CORPORA[name]:
            if not file(part).exists():
                for built, rows in _BUILDERS[part]().items():
                    _write_lines(file(built), (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        if not out.exists():  # a corpus of several parts: their files joined
            _write_lines(out, _lines_of(file(part) for part in EMBEDDED_CORPORA[name]))
    return out


def _lines_of(paths: Iterable[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="utf-8") as f:
            yield from f


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write `lines` to `path` atomically (a reader never sees a part of it)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        f.writelines(lines)
