"""Embedded corpora: English text that ships inside every CPython, so a fresh machine needs no download.

- `pydoc_topics`: the language reference topics behind `help()` (`pydoc_data.topics`, ~465k characters).
- `stdlib_docstrings`: the docstrings of the standard library's modules, one document per module
  (~1.5M characters).
- `python_docs`: both.

And one embedded task table, for fine-tuning:
- `stdlib_functions`: one row per documented standard-library function: its code without the docstring
  (`code`), the docstring's first line (`summary`), the whole docstring (`docstring`) and its top-level
  module (`module`). Code -> summary is a generation task; docstring -> module a classification task.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

from lightning_llm.data.synthetic import fairness_hiring, fairness_occupations
from lightning_llm.errors import ConfigError

EMBEDDED_PREFIX = "embedded:"
_SKIPPED_STDLIB_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "__pycache__"}


def pydoc_topics() -> Iterator[dict[str, str]]:
    """One document per `help()` topic, in sorted order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield {"text": topics[name].strip(), "source": f"pydoc:{name}"}


def stdlib_docstrings() -> Iterator[dict[str, str]]:
    """One document per standard-library module: its module, class and function docstrings."""
    for relative, tree, _ in _stdlib_trees():
        docs = [
            doc
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and (doc := ast.get_docstring(node))
        ]
        if docs:
            yield {"text": "\n\n".join(docs), "source": f"stdlib:{relative.as_posix()}"}


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


def stdlib_functions(max_code_chars: int = 1200) -> Iterator[dict[str, str]]:
    """One row per public, documented standard-library function whose code (docstring removed) is short."""
    for relative, tree, source in _stdlib_trees():
        module = relative.parts[0].removesuffix(".py")
        lines = source.splitlines()
        for node in ast.walk(tree):
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


EMBEDDED_CORPORA = {
    "pydoc_topics": (pydoc_topics,),
    "stdlib_docstrings": (stdlib_docstrings,),
    "python_docs": (pydoc_topics, stdlib_docstrings),
    "stdlib_functions": (stdlib_functions,),
    # skewed synthetic data for fairness experiments (eval=fairness measures the skew a model picks up)
    "fairness_hiring": (lambda: fairness_hiring("reference"),),
    "fairness_occupations": (lambda: ({"text": t} for t in fairness_occupations().reference),),
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
    out = Path(cache_dir) / "corpora" / f"{name}-{version}.jsonl"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("w", encoding="utf-8") as f:
            for source in EMBEDDED_CORPORA[name]:
                for doc in source():
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        tmp.replace(out)
    return out
