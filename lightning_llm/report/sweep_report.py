"""A sweep's report: the metric against each swept hyperparameter, all curves, failures, seeds as statistics."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from lightning_llm.errors import ConfigError
from lightning_llm.report import plots, stats
from lightning_llm.report.load import Run, check_folder, load_sweep, parse_override
from lightning_llm.report.optuna_study import add_optuna
from lightning_llm.report.render import Document

FINISHED = ("completed", "partial")  # training ended normally (partial: some eval tasks could not run)


def write_sweep_report(sweep_dir: str | Path, metric: str | None = None) -> list[Path]:
    """Write `report.md` and `report.html` beside the sweep's summary.csv; `metric` defaults to the jobs'
    `optimized_metric` (else val/loss). Returns their paths."""
    sweep_dir = Path(sweep_dir)
    runs = load_sweep(sweep_dir) if check_folder(sweep_dir) == "sweep" else []
    if not runs:
        raise ConfigError(f"{sweep_dir} holds no job folders (0/, 1/, ...) with a run: pass a sweep folder")
    metric = metric or runs[0].config.get("optimized_metric") or "val/loss"
    doc = Document(f"Sweep {sweep_dir.name}")
    values = {run.label: value for run in runs if (value := metric_of(run, metric)) is not None}
    failed = [run for run in runs if run.results.get("status") not in FINISHED]
    doc.text(f"{len(runs)} jobs, {len(failed)} did not finish; metric: {metric}")
    names = job_names(runs)
    rows = [[r.label, names[r.label], r.results.get("status", "unknown"), values.get(r.label)] for r in runs]
    doc.table(["job", "swept", "status", metric], rows)
    add_hyperparameters(doc, runs, values, metric)
    doc.heading("Validation curves")
    curves = {names[run.label]: run.val_loss_curve() for run in runs}
    doc.figure(plots.line_plot(curves, "val/loss of every job", "step", "val/loss"), "val/loss, all jobs")
    doc.heading("Overrides", 3)
    doc.table(["job", "overrides"], [[r.label, " ".join(r.overrides)] for r in runs])
    if failed:
        doc.heading("Jobs that did not finish")
        doc.table(
            ["failed job", "status", "error"],
            [[r.label, r.results.get("status", "unknown"), r.results.get("error")] for r in failed],
        )
    add_seed_statistics(doc, runs, values, metric)
    add_optuna(doc, sweep_dir)
    return doc.write(sweep_dir)


def metric_of(run: Run, metric: str) -> float | None:
    """The run's final `metric` when it finished and the value is finite."""
    value = (run.results.get("metrics") or {}).get(metric)
    if run.results.get("status") not in FINISHED or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def swept(runs: list[Run], seed: bool = False) -> dict[str, dict[str, str]]:
    """Hyperparameter -> {job: value} for every override key (but seed, unless asked) whose value differs between
    jobs."""
    table: dict[str, dict[str, str]] = {}
    for run in runs:
        for key, value in filter(None, map(parse_override, run.overrides)):
            table.setdefault(key, {})[run.label] = value
    return {k: v for k, v in table.items() if (seed or k != "seed") and len(set(v.values())) > 1}


def _short(value: str) -> str:
    """A swept value as a name shows it: a fraction to 4 significant digits (Optuna's 0.0019960425587510337)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("+-").isdigit() else f"{number:.4g}"


def swept_name(run: Run, params: dict[str, dict[str, str]]) -> str:
    """A job by its swept values: `optimizer.lr=0.001 scheduler=cosine` (empty when nothing is swept)."""
    return " ".join(f"{key}={_short(by_job[run.label])}" for key, by_job in params.items() if run.label in by_job)


def job_names(runs: list[Run]) -> dict[str, str]:
    """Job -> a name for tables and legends: its swept values, seed included (`job <n>` when nothing is swept; the
    job's number added where two jobs would share a name, as an Optuna study that tries a point twice)."""
    params = swept(runs, seed=True)
    names = {run.label: swept_name(run, params) or f"job {run.label}" for run in runs}
    repeated = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {job: f"{name} (job {job})" if name in repeated else name for job, name in names.items()}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def add_hyperparameters(doc: Document, runs: list[Run], values: dict[str, float], metric: str) -> None:
    params = swept(runs)
    if not params or not values:
        return
    doc.heading(f"{metric} against each swept hyperparameter")
    for key, by_job in params.items():
        pairs = [(by_job[job], values[job]) for job in by_job if job in values]
        if not pairs:
            continue
        numbers = [_number(x) for x, _ in pairs]
        if all(n is not None for n in numbers):
            points = [(float(n), y) for n, (_, y) in zip(numbers, pairs, strict=True)]
            doc.figure(plots.numeric_scatter(points, key, key, metric), f"{metric} / {key}")
        else:
            groups: dict[str, list[float]] = {}
            for x, y in sorted(pairs):
                groups.setdefault(x, []).append(y)
            doc.figure(plots.strip_plot(groups, key, key, metric), f"{metric} / {key}")


def configurations(runs: list[Run], values: dict[str, float]) -> dict[str, list[float]]:
    """The metric's values grouped by configuration: the swept values without the seed."""
    params = swept(runs)
    groups: dict[str, list[float]] = {}
    for run in runs:
        if run.label in values:
            groups.setdefault(swept_name(run, params) or "(defaults)", []).append(values[run.label])
    return groups


def add_seed_statistics(doc: Document, runs: list[Run], values: dict[str, float], metric: str) -> None:
    groups = configurations(runs, values)
    if not any(len(v) > 1 for v in groups.values()):
        return
    doc.heading("Seeds as statistics")
    doc.text(f"{metric} per configuration over its seeds: mean, sample standard deviation, 95% t confidence interval")
    rows = []
    for name, vals in groups.items():
        s = stats.summarize(vals)
        rows.append([name, s.n, s.mean, s.std, s.ci_low, s.ci_high])
    doc.table(["configuration", "n", "mean", "std", "95% CI low", "95% CI high"], rows)
    repeated = [(name, vals) for name, vals in groups.items() if len(vals) > 1]
    pairs = list(itertools.combinations(repeated, 2))
    if not pairs:
        return
    doc.heading("Welch t-tests between configurations", 3)
    rows = [[a, b, len(va), len(vb), stats.welch_p(va, vb)] for (a, va), (b, vb) in pairs]
    doc.table(["A", "B", "n A", "n B", "p (two-sided)"], rows)
    for (a, va), (b, vb) in pairs:
        doc.text(stats.compare_in_words(a, va, b, vb))
