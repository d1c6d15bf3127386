"""Reading rows: an embedded corpus, a local file or folder, or a `datasets` name; columns, splits, files of texts."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from lightning_llm.data.corpus import is_embedded, materialize_embedded
from lightning_llm.data.streamed import stream_columns
from lightning_llm.data.text_files import text_pieces
from lightning_llm.errors import ConfigError
from lightning_llm.hub import hub_available

_BUILDERS = {
    ".txt": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def looks_local(path: str) -> bool:
    """Whether `data.path` names a local file or folder (rather than a `datasets` hub name)."""
    return path.startswith((".", "/", "~")) or Path(path).suffix in _BUILDERS or os.path.exists(path)


def check_data_path(path: str, key: str = "data.path") -> None:
    """Fail fast, before any loading, on a local data path that does not exist."""
    if not is_embedded(path) and looks_local(path) and not Path(path).expanduser().exists():
        raise ConfigError(f"{key}={path!r} does not exist: give an existing file or folder, or a `datasets` name")


def load_rows(
    path: str,
    name: str | None,
    split: str,
    cache_dir: Path,
    sample_by: str = "document",
    in_pieces: bool = False,
    streaming: bool = False,
):
    """A `datasets.Dataset` from an embedded corpus, a local file or folder, or a `datasets` name. With
    `in_pieces`, text files are read a block at a time into rows of bounded size (`text_files.text_pieces`).
    With `streaming`, a `datasets.IterableDataset` instead: the rows are read as they are used, never stored
    (text files in pieces that name their documents, one stream shard per file).

    Files are untrusted input: text that is not UTF-8 and JSON lines that do not parse are named (file, line,
    offset) in one line, and no progress bar is printed before such an error."""
    import datasets
    from datasets.utils import disable_progress_bars, enable_progress_bars

    check_data_path(path)
    source = str(materialize_embedded(path, cache_dir)) if is_embedded(path) else path
    cache = str(Path(cache_dir) / "datasets")
    files: list[str] = []
    disable_progress_bars()
    datasets_log = logging.getLogger("datasets")
    level = datasets_log.level
    datasets_log.setLevel(logging.CRITICAL)  # its own error lines would precede ours
    try:
        if not looks_local(source):
            if not hub_available():
                raise ConfigError(
                    f"data.path={path!r} is a `datasets` hub name and the Hugging Face Hub is unreachable "
                    "(or an HF_*_OFFLINE switch is set): give a local file with the same columns"
                )
            return datasets.load_dataset(source, name, split=split, cache_dir=cache, streaming=streaming)
        local = Path(source).expanduser()
        files = sorted(str(p) for p in local.rglob("*") if p.suffix in _BUILDERS) if local.is_dir() else [str(local)]
        suffixes = {Path(f).suffix for f in files}
        builders = {_BUILDERS.get(s) for s in suffixes}
        if not files or None in builders or len(builders) != 1:
            raise ConfigError(
                f"data.path={path!r} holds no readable files of one kind: "
                f"give .txt/.md, .json/.jsonl, .csv or .parquet files (found {sorted(suffixes)})"
            )
        if all(os.path.getsize(f) == 0 for f in files):
            raise ConfigError(f"data.path={path!r} has no rows: the corpus is empty")
        builder = builders.pop()
        if builder == "text" and streaming:
            pieces = {"files": files, "sample_by": sample_by, "document_ids": True}
            return datasets.IterableDataset.from_generator(text_pieces, gen_kwargs=pieces)
        if builder == "text" and in_pieces:
            stamps = [[os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]  # keys the cache by content
            return datasets.Dataset.from_generator(
                text_pieces, gen_kwargs={"files": files, "sample_by": sample_by, "stamps": stamps}, cache_dir=cache
            )
        extra = {"sample_by": sample_by} if builder == "text" else {}
        return datasets.load_dataset(
            builder, data_files=files, split="train", cache_dir=cache, streaming=streaming, **extra
        )
    except ConfigError:
        raise
    except Exception as err:
        raise explain_load_error(err, path, files) from err
    finally:
        enable_progress_bars()
        datasets_log.setLevel(level)


def _causes(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        chain.append(err)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return chain


def first_undecodable(files: list[str]) -> tuple[str, UnicodeDecodeError] | None:
    """The first file that is not UTF-8, with the decoding error (read in chunks: any size)."""
    import codecs

    for file in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    err.start += offset
                    return file, err
                offset += len(chunk)
    return None


def first_bad_json_line(files: list[str]) -> tuple[str, int, str] | None:
    """(file, line number, reason) of the first line of a .jsonl/.json file that is not a JSON object."""
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    return file, number, str(err)
                if not isinstance(row, dict):
                    return file, number, f"a JSON {type(row).__name__}, not an object"
    return None


def explain_load_error(err: Exception, path: str, files: list[str]) -> ConfigError:
    """One line naming what in `files` could not be read (`datasets` wraps the real error)."""
    causes = _causes(err)
    local = [f for f in files if Path(f).is_file()]
    if any(isinstance(c, UnicodeDecodeError) for c in causes) or any("utf-8" in str(c).lower() for c in causes):
        found = first_undecodable(local)
        if found:
            file, bad = found
            return ConfigError(
                f"data.path={path!r}: {file} is not UTF-8 text (byte {bad.object[bad.start]:#04x} at offset "
                f"{bad.start}): convert it (e.g. iconv -f latin1 -t utf-8) or remove it"
            )
    json_files = [f for f in local if Path(f).suffix in (".json", ".jsonl")]
    if json_files:
        found_line = first_bad_json_line(json_files)
        if found_line:
            file, number, reason = found_line
            return ConfigError(f"data.path={path!r}: line {number} of {file} is not a JSON object ({reason})")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not local:
        return ConfigError(
            f"data.path={path!r} could not be loaded ({type(err).__name__}: {first}): give a local file or "
            "folder, or a `datasets` name reachable online"
        )
    return ConfigError(f"data.path={path!r} could not be read ({type(err).__name__}: {first})")


def select_columns(ds, columns: dict[str, str], path: str, key_prefix: str = "data"):
    """Keep `columns` ({our name: the data's column}) under our names; name a missing column in one line."""
    found = stream_columns(ds)
    for ours, theirs in columns.items():
        if theirs not in found:
            key = key_prefix if "." in key_prefix else f"{key_prefix}.{ours}_column"
            raise ConfigError(f"{key}={theirs!r} is not a column of {path!r}: its columns are {found}")
    ds = ds.select_columns(list(dict.fromkeys(columns.values())))
    renames = {theirs: ours for ours, theirs in columns.items() if theirs != ours}
    return ds.rename_columns(renames) if renames else ds


def read_texts(path: str) -> list[str]:
    """Texts of a local .txt (one per line) or .jsonl file (every string value of every row)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"data.decontaminate_paths has {path!r}, which does not exist")
    lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if p.suffix not in (".jsonl", ".json"):
        return lines
    return [v for row in map(json.loads, lines) for v in row.values() if isinstance(v, str)]


def check_loader_settings(batch_size: int, block_size: int, val_fraction: float, num_workers: int) -> None:
    """Numeric data settings in range, named in one line (before anything loads)."""
    if batch_size < 1:
        raise ConfigError(f"data.batch_size={batch_size} must be at least 1")
    if block_size < 2:
        raise ConfigError(f"data.block_size={block_size} must be at least 2")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction={val_fraction} must be between 0 and 1 (exclusive)")
    if num_workers < 0:
        raise ConfigError(f"data.num_workers={num_workers} must be 0 or more")


def check_window_settings(windows: str, packing: str) -> None:
    """`data.windows` must be known and, at random offsets, read a packed stream (not one document per row)."""
    if windows not in ("grid", "random"):
        raise ConfigError(f"data.windows={windows!r} is unknown: use grid or random")
    if packing == "pad" and windows == "random":
        raise ConfigError("data.windows=random reads a packed stream: use data.packing=concat or doc_mask with it")
