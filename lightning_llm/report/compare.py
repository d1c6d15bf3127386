"""Several runs and sweeps side by side: val curves, metrics, and exactly the config keys that differ."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_llm.report import plots
from lightning_llm.report.load import Run, check_folder, flatten, load_run, load_sweep
from lightning_llm.report.render import Document

ABSENT = "(absent)"
RUN_FACTS = ("status", "steps", "tokens", "tokens_per_s", "wall_seconds")


def gather(paths: Sequence[str | Path]) -> list[Run]:
    """The runs behind `paths` (a sweep counts as its jobs, labelled `<sweep>/<job>`)."""
    runs: list[Run] = []
    for path in map(Path, paths):
        if check_folder(path, "report --compare") == "run":
            runs.append(load_run(path))
        else:
            for job in load_sweep(path):
                job.label = f"{path.name}/{job.label}"
                runs.append(job)
    labels = [r.label for r in runs]
    for run in runs:  # two runs with the same folder name (from different parents) get their parent's name too
        if labels.count(run.label) > 1:
            run.label = f"{run.path.parent.name}/{run.path.name}"
    return runs


def config_differences(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dotted key -> the value in each config, for exactly the keys whose values are not all the same
    (`hydra.*`, `defaults` and `paths.output_dir` ignored; a key missing from a config reads `(absent)`)."""
    flat = [flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    table = {key: [f.get(key, ABSENT) for f in flat] for key in keys}
    return {k: v for k, v in table.items() if len({json.dumps(x, sort_keys=True, default=str) for x in v}) > 1}


def write_comparison(paths: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """Write `report.md` and `report.html` comparing the runs (and sweeps' runs) at `paths` into `out_dir`."""
    runs = gather(paths)
    labels = [run.label for run in runs]
    doc = Document(f"Comparison of {len(runs)} runs")
    doc.table(["run", "folder"], [[run.label, str(run.path)] for run in runs])
    doc.heading("Validation curves")
    curves = {run.label: run.val_loss_curve() for run in runs}
    figure = plots.line_plot(curves, "val/loss", "step", "val/loss")
    if figure:
        doc.figure(figure, "val/loss, all runs")
    else:
        doc.text("no run logged val/loss")
    doc.heading("Metrics")
    names = sorted({name for run in runs for name in run.results.get("metrics") or {}})
    rows = [[fact, *(run.results.get(fact) for run in runs)] for fact in RUN_FACTS]
    rows += [[name, *((run.results.get("metrics") or {}).get(name) for run in runs)] for name in names]
    doc.table(["metric", *labels], [row for row in rows if any(v is not None for v in row[1:])])
    doc.heading("Config differences")
    with_config = [run for run in runs if run.config]
    missing = [run.label for run in runs if not run.config]
    if missing:
        doc.text(f"no .hydra/config.yaml (left out of this table): {', '.join(missing)}")
    differences = config_differences([run.config for run in with_config])
    if differences:
        doc.table(["key", *(run.label for run in with_config)], [[k, *map(_cell, v)] for k, v in differences.items()])
    else:
        doc.text("the configs are the same (hydra.*, defaults and paths.output_dir aside)")
    return doc.write(Path(out_dir))


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
