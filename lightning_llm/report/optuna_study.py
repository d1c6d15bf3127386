"""An Optuna sweep's study (when optuna is installed and its SQLite database is found): history, importances."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lightning_llm.log import get_logger
from lightning_llm.report import plots
from lightning_llm.report.load import load_sweep
from lightning_llm.report.render import Document

log = get_logger(__name__)


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _resolve(text: str, config: dict[str, Any]) -> str:
    """`${a.b}` references to plain keys of `config` replaced by their values (others left as they are)."""
    return re.sub(r"\$\{([\w.]+)\}", lambda m: str(_select(config, m.group(1)) or m.group(0)), text)


def find_storage(sweep_dir: Path) -> tuple[str, str | None] | None:
    """The study's SQLite URL (an existing file) and name, from multirun.yaml or the jobs' paths.log_dir."""
    multirun = sweep_dir / "multirun.yaml"
    config = yaml.safe_load(multirun.read_text()) if multirun.is_file() else {}
    sweeper = _select(config, "hydra.sweeper") or {}
    name = sweeper.get("study_name")
    urls = [_resolve(str(sweeper["storage"]), config)] if sweeper.get("storage") else []
    runs = load_sweep(sweep_dir)[:1]
    log_dir = _select(runs[0].config, "paths.log_dir") if runs else None
    urls += [f"sqlite:///{log_dir}/optuna.db"] if log_dir else []
    for url in urls:
        if not url.startswith("sqlite:///"):
            continue
        relative = Path(url.removeprefix("sqlite:///"))
        # a relative path is relative to where the sweep ran: here, or a folder above the sweep
        for base in [Path.cwd(), *sweep_dir.resolve().parents]:
            if (base / relative).is_file():
                return f"sqlite:///{(base / relative).resolve()}", name
    return None


def add_optuna(doc: Document, sweep_dir: Path) -> None:
    """The best trial, the optimisation history and the parameter importances; nothing when not an Optuna sweep."""
    results_file = sweep_dir / "optimization_results.yaml"
    if not results_file.is_file():
        return
    try:
        import optuna
    except ImportError:
        return
    found = find_storage(sweep_dir)
    if found is None:
        return
    url, name = found
    try:
        if name is None:
            (summary,) = optuna.get_all_study_summaries(url)  # one study: it is this sweep's
            name = summary.study_name
        study = optuna.load_study(study_name=name, storage=url)
    except Exception as err:  # a report never fails for the optional study section
        log.info("optuna study not shown: %s", err)
        return
    doc.heading(f"Optuna study {name}")
    best = yaml.safe_load(results_file.read_text()) or {}
    rows = [*(best.get("best_params") or {}).items(), ("value", best.get("best_value"))]
    doc.table(["best", "value"], [row for row in rows if row[1] is not None])
    if len(study.directions) != 1:
        doc.text("a multi-objective study: its Pareto front is in optimization_results.yaml")
        return
    doc.figure(plots.line_plot(history(study), "optimisation history", "trial", "objective"), "optimisation history")
    try:
        importances = optuna.importance.get_param_importances(study)
    except Exception as err:  # fANOVA needs scikit-learn and two or more finished trials
        doc.text(f"parameter importances unavailable: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return
    doc.figure(plots.bar_plot(importances, "parameter importances (fANOVA)", "importance"), "parameter importances")
    doc.table(["parameter", "importance"], list(importances.items()))


def history(study: Any) -> dict[str, list[tuple[float, float]]]:
    """Each finished trial's objective and the best so far (by the study's direction)."""
    import optuna

    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    trials = [(float(t.number), float(t.value)) for t in study.trials if t.value is not None]
    best = [(x, pick(y for _, y in trials[: i + 1])) for i, (x, _) in enumerate(trials)]
    return {"trial": trials, "best so far": best}
