"""W&B dashboards as code: a saved W&B workspace built with `wandb-workspaces` from what our runs log.

The panels are chosen from the keys the given runs log (their csv/metrics.csv, which holds what the W&B logger
gets too, and their results.json's eval): losses against steps and against tokens seen, learning rate and gradient
norm, throughput, MFU and cost, eval tables, the privacy budget spent, preference rewards, and a sweep section
(parallel coordinates over the settings the runs differ in, and their importance for the optimized metric). A
section whose keys no run logs is left out. Runs are grouped as the W&B logger groups them (one group per
multirun: training.loggers.wandb_logger).

Offline the workspace is a JSON file (`write_spec`) that `push_spec` saves later. Reads plain files only.
"""

from __future__ import annotations

import csv
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_llm.extras import require
from lightning_llm.report.wandb_log import summary_scalars

#: (section, [(panel title, key patterns, x axis)]): a line plot per panel, of the logged keys that match
LINE_SECTIONS = [
    ("Loss", [
        ("training loss against steps", ["train/loss"], "Step"),
        ("training loss against tokens seen", ["train/loss"], "train/tokens"),
        ("validation loss against steps", ["val/loss", "val/*/loss"], "Step"),
        ("validation loss against tokens seen", ["val/loss", "val/*/loss"], "train/tokens"),
        ("validation perplexity", ["val/perplexity"], "Step"),
        ("validation accuracy and F1", ["val/accuracy", "val/f1_macro"], "Step"),
    ]),
    ("Learning rate and gradients", [
        ("learning rate", ["lr-*"], "Step"),
        ("gradient norm", ["train/grad_norm"], "Step"),
        ("loss spikes", ["train/loss_spike"], "Step"),
    ]),
    ("Throughput, MFU and cost", [
        ("tokens per second", ["train/device/items_per_sec"], "Step"),
        ("achieved FLOP/s", ["train/device/flops_per_sec", "compute/achieved_tflops"], "Step"),
        ("model FLOPs utilisation", ["compute/mfu"], "Step"),
        ("energy, CO2 and cost", ["compute/energy*", "compute/co2*", "compute/cost*"], "Step"),
    ]),
    ("Privacy", [("epsilon spent (DP-SGD)", ["privacy/epsilon"], "Step")]),
    ("Preference", [
        ("rewards", ["rewards/*", "*/rewards/*"], "Step"),
        ("log-probabilities", ["logps/*", "*/logps/*"], "Step"),
    ]),
    ("Data mixture", [("realized shares", ["train/mix/*"], "Step")]),
]  # fmt: skip
X_BUILTIN = "Step"
EVAL_TABLE = "eval/results"  # the eval table report.wandb_log logs


@dataclass
class RunKeys:
    """What a set of runs logs: metric keys, config keys, and the settings they differ in (swept)."""

    metrics: set[str] = field(default_factory=set)
    config: set[str] = field(default_factory=set)
    swept: list[str] = field(default_factory=list)
    optimized_metric: str = "val/loss"


def run_folders(folders: list[Path]) -> list[Path]:
    """Run folders (one holding .hydra/) and the job folders of sweep folders (one holding multirun.yaml)."""
    runs = []
    for folder in folders:
        if (folder / "multirun.yaml").is_file():
            runs += sorted(p.parent.parent for p in folder.glob("*/.hydra/config.yaml"))
        else:
            runs.append(folder)
    return runs


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """`a.b.c` -> value for every leaf of nested mappings."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat_keys(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in out.items()}


def read_keys(folders: list[Path]) -> RunKeys:
    """The keys the runs in `folders` log, read from their files."""
    keys = RunKeys()
    overrides: list[dict[str, str]] = []
    for run in run_folders(folders):
        metrics = run / "csv" / "metrics.csv"
        if metrics.is_file():
            with metrics.open(newline="") as f:
                header = next(csv.reader(f), [])
            keys.metrics |= {k for k in header if k not in ("step", "epoch")}
        results = run / "results.json"
        if results.is_file():
            evaluation = json.loads(results.read_text()).get("eval")
            if evaluation:
                keys.metrics |= {EVAL_TABLE, *summary_scalars(evaluation)}
        config = run / ".hydra" / "config.yaml"
        if config.is_file():
            values = flat_keys(yaml.safe_load(config.read_text()) or {})
            keys.config |= set(values)
            keys.optimized_metric = str(values.get("optimized_metric") or keys.optimized_metric)
        chosen = run / ".hydra" / "overrides.yaml"
        if chosen.is_file():
            words = yaml.safe_load(chosen.read_text()) or []
            overrides.append(dict(w.split("=", 1) for w in words if "=" in w and not w.startswith(("hydra", "~"))))
    keys.swept = swept_settings(overrides, keys.config)
    return keys


def swept_settings(overrides: list[dict[str, str]], config: set[str]) -> list[str]:
    """The config keys the runs were given different values of (a sweep's parameters); with one run, its numeric
    overrides (what a later sweep of it would vary)."""
    every = sorted({k for o in overrides for k in o if k in config})
    differing = [k for k in every if len({o.get(k) for o in overrides}) > 1]
    if differing or len(overrides) > 1:
        return differing
    return [k for k in every if _is_number(overrides[0][k])] if overrides else []


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_workspace(keys: RunKeys, entity: str, project: str, name: str) -> Any:
    """The `wandb_workspaces` Workspace of these keys' sections, runs grouped by their W&B group."""
    require("wandb_workspaces", "lightning-llm dashboard")
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    sections = []
    for title, panels in LINE_SECTIONS:
        plots = []
        for panel, patterns, x in panels:
            ys = sorted(k for k in keys.metrics if any(fnmatch.fnmatchcase(k, p) for p in patterns))
            if ys and (x == X_BUILTIN or x in keys.metrics):
                plots.append(wr.LinePlot(title=panel, x=x, y=ys, title_x="tokens seen" if x != X_BUILTIN else None))
        if plots:
            sections.append(ws.Section(name=title, panels=plots, is_open=True))
    evaluation = []
    if EVAL_TABLE in keys.metrics:
        evaluation.append(wr.WeavePanelSummaryTable(table_name=EVAL_TABLE))
    summary = sorted(k for k in keys.metrics if k.startswith("eval/summary/"))
    if summary:
        evaluation.append(wr.BarPlot(title="eval suite summary", metrics=summary))
    if evaluation:
        sections.append(ws.Section(name="Evaluation", panels=evaluation, is_open=True))
    target = keys.optimized_metric
    sweep: list[Any] = [wr.ParameterImportancePlot(with_respect_to=target)] if target in keys.metrics else []
    if keys.swept and target in keys.metrics:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in keys.swept]
        columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(target)))
        sweep.insert(0, wr.ParallelCoordinatesPlot(title=f"{target} against the swept settings", columns=columns))
    if sweep:
        sections.append(ws.Section(name="Sweep", panels=sweep, is_open=True))
    runsets = ws.RunsetSettings(groupby=[ws.Metric("Group")])
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections, runset_settings=runsets)


def panel_keys(spec: dict[str, Any]) -> set[str]:
    """Every metric or config key the panels of a workspace spec name (what the tests hold to the runs' keys)."""
    named: set[str] = set()
    for section in spec["section"]["panelBankConfig"]["sections"]:
        for panel in section["panels"]:
            config = panel.get("config", {})
            named |= set(config.get("metrics") or [])
            named |= {config["xAxis"]} if config.get("xAxis") and config.get("xAxis") != "_step" else set()
            named |= {c["accessor"] for c in config.get("columns") or []}
            named |= {config["targetKey"]} if config.get("targetKey") else set()
    return named


def spec_of(workspace: Any) -> dict[str, Any]:
    """The workspace as the JSON file `push_spec` reads: where it goes and its view spec."""
    view = workspace._to_model()
    spec = view.spec.model_dump(by_alias=True, exclude_none=True)
    return {"entity": view.entity, "project": view.project, "name": view.display_name, "spec": spec}


def write_spec(workspace: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec_of(workspace), indent=1, sort_keys=True) + "\n")
    return path


def push_spec(path: Path) -> Any:
    """Save a written spec as a W&B workspace (needs the API key and network); returns the saved workspace."""
    require("wandb_workspaces", "lightning-llm dashboard --push")
    from wandb_workspaces.workspaces import Workspace, internal

    data = json.loads(path.read_text())
    spec = internal.WorkspaceViewspec.model_validate(data["spec"])
    view = internal.View(
        entity=data["entity"], project=data["project"], display_name=data["name"], name="", id="", spec=spec
    )
    return Workspace._from_model(view).save()
