"""Every combination trains or refuses in one line: a covering array (every pair of options, allpairspy) over the
model family with an objective and data it trains on, fine-tuning (from a tiny pretrained checkpoint made once
per session), tokenizer, packing, windows, data format, loader workers, privacy, precision, logger and callbacks.
Each cell is a
2-step tiny run; it passes when it trains, or when it is refused with one ConfigError line before any work (its
run folder holds nothing). A traceback, a hang (each cell runs under a time limit) or a refusal after work started
fails it. The outcome table goes to the test's folder and, for the full matrix, to logs/combinations.md."""

from __future__ import annotations

import dataclasses
import faulthandler
import time
from pathlib import Path

import pytest
from allpairspy import AllPairs
from hydra.utils import get_class

from lightning_llm.conf import load_option
from lightning_llm.errors import ConfigError, user_error_in
from lightning_llm.recipe import train

from .conftest import ROOT, TINY, compose_config

#: (model, objective, data) that train together (other triples are refused at the check: tests/test_errors.py)
TASKS = {
    "gpt-clm": ("gpt", "clm", "pydoc_topics"),
    "gpt-sft": ("gpt", "sft", "stdlib_summaries"),
    "gpt-classify": ("gpt", "classify", "stdlib_modules"),
    "bert-mlm": ("bert", "mlm", "pydoc_topics"),
    "bert-classify": ("bert", "classify", "stdlib_modules"),
    "t5-span": ("t5", "span", "pydoc_topics"),
    "t5-sft": ("t5", "sft", "stdlib_summaries"),
}
FACTORS = {
    "task": list(TASKS),
    "finetune": ["none", "full", "freeze", "lora", "adapter", "prompt", "qlora"],
    "tokenizer": ["bpe", "unigram", "char"],
    "packing": ["concat", "doc_mask", "pad"],
    "windows": ["grid", "random"],
    "format": ["memory", "shards"],
    "num_workers": [0, 1],
    "privacy": ["none", "dp"],
    "precision": ["32-true", "bf16-mixed"],
    "logger": ["csv", "tensorboard", "wandb", "none"],
    "callbacks": ["default", "none"],
}
CELL_SECONDS = 300  # a 2-step tiny run takes seconds: past this the cell hangs (every thread's stack is dumped)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One combination of FACTORS' options."""

    task: str
    finetune: str = "none"
    tokenizer: str = "bpe"
    packing: str = "concat"
    windows: str = "grid"
    format: str = "memory"
    num_workers: int = 0
    privacy: str = "none"
    precision: str = "32-true"
    logger: str = "csv"
    callbacks: str = "default"

    @property
    def objective_class(self) -> type:
        return get_class(load_option("objective", TASKS[self.task][1])._target_)

    @property
    def packed(self) -> bool:
        """Whether the data is packed text (packing, windows and format apply to it only)."""
        return self.objective_class.examples == "text"

    @property
    def name(self) -> str:
        return "-".join(str(v) for v in dataclasses.astuple(self))

    def overrides(self, checkpoints: dict[str, Path]) -> list[str]:
        """The command line of this cell: TINY, 2 steps, and its options."""
        model, objective, data = TASKS[self.task]
        dropped = ("callbacks",) if self.callbacks == "none" else ()
        dropped += ("tokenizer.vocab_size",) if self.tokenizer == "char" else ()  # one token per character seen
        tiny = [o for o in TINY if not o.lstrip("~").startswith(dropped)] if dropped else TINY
        out = [*tiny, f"model={model}", f"objective={objective}", f"data={data}", f"finetune={self.finetune}"]
        out.append(f"tokenizer={self.tokenizer}")
        out += ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=2"]
        out += [f"data.num_workers={self.num_workers}", f"privacy={self.privacy}", f"precision={self.precision}"]
        out += [f"logger={self.logger}", f"callbacks={self.callbacks}"]
        if self.packed:
            out += [f"data.packing={self.packing}", f"data.windows={self.windows}", f"data.format={self.format}"]
        if self.finetune != "none":
            out.append(f"model.pretrained={checkpoints[model]}")
        if self.privacy == "dp" and self.finetune in ("lora", "qlora"):
            out.append("finetune.dropout=0")  # what privacy=dp's refusal of dropout asks for
        return out


def applies(row: list) -> bool:
    """Options that exist for the row's task: packing, windows and format for packed text only, and a packing the
    objective declares (`Objective.packings`)."""
    cell = dict(zip(FACTORS, row, strict=False))
    if "packing" not in cell:
        return True
    task = Cell(cell["task"])
    if not task.packed:
        defaults = {"packing": "concat", "windows": "grid", "format": "memory"}
        return all(cell.get(key, value) == value for key, value in defaults.items())
    return cell["packing"] in task.objective_class.packings


def pairs() -> list[dict[str, object]]:
    """Every pair of options of two factors."""
    names = list(FACTORS)
    return [{a: u, b: v} for i, a in enumerate(names) for b in names[i + 1 :] for u in FACTORS[a] for v in FACTORS[b]]


def first_cell_with(options: dict[str, object]) -> Cell | None:
    """A cell with these options (and the defaults) whose options all apply, trying each task."""
    for task in [options["task"]] if "task" in options else list(TASKS):
        cell = Cell(**{**options, "task": task})
        if applies(list(dataclasses.astuple(cell))):
            return cell
    return None


def covering_array() -> list[Cell]:
    """Every pair of two factors' options that can apply together in at least one cell: allpairspy's array, and a
    cell for each pair its filtered search left out."""
    cells = [Cell(*row) for row in AllPairs(list(FACTORS.values()), filter_func=applies)]
    for pair in pairs():
        if not any(all(getattr(c, k) == v for k, v in pair.items()) for c in cells):
            cell = first_cell_with(pair)
            cells += [cell] if cell is not None else []
    return cells


@dataclasses.dataclass
class Outcome:
    cell: Cell
    result: str  # trained, refused or FAILED
    detail: str
    seconds: float


def run_cell(cell: Cell, folder: Path, cache_dir: Path, checkpoints: dict[str, Path]) -> Outcome:
    """Run one cell in this process under CELL_SECONDS and classify how it ended."""
    run_dir, started = folder / cell.name, time.perf_counter()
    faulthandler.dump_traceback_later(CELL_SECONDS, exit=True)
    try:
        results = train(compose_config(cell.overrides(checkpoints), run_dir, cache_dir))
        ok = results["status"] == "completed" and results["steps"] == 2
        result, detail = ("trained", "2 steps") if ok else ("FAILED", f"status {results['status']}")
    except Exception as err:  # a cell's failure is a row of the table, not the end of the matrix
        user = user_error_in(err)
        touched = sorted(p.name for p in run_dir.glob("*"))
        if isinstance(user, ConfigError) and not touched and "\n" not in str(user):
            result, detail = "refused", str(user)
        else:
            where = f" (after work started: {', '.join(touched)})" if user is not None and touched else ""
            first = str(err).splitlines()[0] if str(err) else ""
            result, detail = "FAILED", f"{type(err).__name__}: {first}{where}"
    finally:
        faulthandler.cancel_dump_traceback_later()
    return Outcome(cell, result, detail, round(time.perf_counter() - started, 1))


def write_table(outcomes: list[Outcome], path: Path) -> str:
    """The outcome table as Markdown (also written to `path`)."""
    head = [*FACTORS, "outcome", "seconds", "detail"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in outcomes:
        text_only = ("packing", "windows", "format")
        options = [str(v) if o.cell.packed or k not in text_only else "-" for k, v in vars(o.cell).items()]
        lines.append("| " + " | ".join([*options, o.result, str(o.seconds), o.detail.replace("|", "/")]) + " |")
    counts = {r: sum(o.result == r for o in outcomes) for r in ("trained", "refused", "FAILED")}
    table = "\n".join([f"{len(outcomes)} cells: " + ", ".join(f"{n} {r}" for r, n in counts.items()), "", *lines])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table + "\n")
    return table


def run_matrix(cells: list[Cell], folder: Path, cache_dir: Path, checkpoints: dict[str, Path], *tables: Path) -> None:
    outcomes = [run_cell(cell, folder, cache_dir, checkpoints) for cell in cells]
    for path in tables:
        table = write_table(outcomes, path)
    assert not [o for o in outcomes if o.result == "FAILED"], table


def test_the_covering_array_holds_every_pair_that_can_apply():
    cells = covering_array()
    for pair in pairs():
        covered = any(all(getattr(c, k) == v for k, v in pair.items()) for c in cells)
        assert covered or first_cell_with(pair) is None, pair


#: a fast slice for `make test`: packed text with document masks in shards through a worker in bf16, DP-SGD on
#: supervised examples (classes; pairs in bf16), and a refusal (span corruption packs with concat only)
FAST = [
    Cell("gpt-clm", packing="doc_mask", format="shards", num_workers=1, precision="bf16-mixed", logger="tensorboard"),
    Cell("bert-classify", privacy="dp", callbacks="none"),
    Cell("gpt-sft", privacy="dp", precision="bf16-mixed"),
    Cell("t5-span", packing="pad"),
]


@pytest.mark.parametrize("cell", FAST, ids=lambda cell: cell.name)
def test_a_slice_of_the_matrix(tmp_path, cache_dir, cell):
    run_matrix([cell], tmp_path, cache_dir, {}, tmp_path / "combinations.md")


@pytest.mark.slow
def test_every_pair_of_options_trains_or_refuses_in_one_line(tmp_path, cache_dir, base_checkpoints):
    run_matrix(
        covering_array(),
        tmp_path,
        cache_dir,
        base_checkpoints,
        tmp_path / "combinations.md",
        ROOT / "logs" / "combinations.md",
    )
