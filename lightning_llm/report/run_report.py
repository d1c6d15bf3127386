"""A run's report: status, curves, configuration, provenance, data, evaluation, samples, compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.report import plots
from lightning_llm.report.load import Run, check_folder, load_run
from lightning_llm.report.render import Document, fmt

#: compute dict keys (results.json `compute`) in display order, with their labels
COMPUTE_KEYS = {
    "device": "device",
    "flops_total": "FLOPs (total)",
    "flops_per_token": "FLOPs per token",
    "achieved_flops_per_s": "achieved FLOP/s",
    "peak_flops_per_s": "peak FLOP/s",
    "mfu": "MFU (model FLOPs utilisation)",
    "energy_kwh": "energy (kWh)",
    "co2_kg": "CO2 (kg)",
    "cost_usd": "cost (USD)",
}
TOKENS_PER_S = "train/device/items_per_sec"


def write_run_report(run_dir: str | Path) -> list[Path]:
    """Write `report.md` and `report.html` (self-contained) into a run folder; returns their paths."""
    if check_folder(Path(run_dir)) != "run":
        raise ConfigError(f"{run_dir} is a sweep folder, not a run: use write_sweep_report (or the report verb)")
    run = load_run(Path(run_dir))
    doc = Document(f"Run {run.path.name}")
    results = run.results
    doc.status(results.get("status", "unknown (no results.json)"), results.get("error"))
    doc.text(headline(run))
    add_metrics(doc, run)
    add_curves(doc, run)
    add_compute(doc, results.get("compute"))
    add_config(doc, run)
    add_model(doc, results)
    add_data(doc, results.get("data"), results.get("tokenizer"))
    add_eval(doc, results.get("eval"))
    add_forgetting(doc, results.get("forgetting"))
    add_samples(doc, results.get("samples"))
    if results.get("checkpoints"):
        doc.heading("Checkpoints")
        doc.mapping(results["checkpoints"], ("checkpoint", "path"))
    return doc.write(run.path)


def headline(run: Run) -> str:
    """One line: final val/loss, steps, tokens, throughput, wall time (what exists)."""
    r, metrics = run.results, run.results.get("metrics") or {}
    parts = [f"final val/loss: {fmt(metrics['val/loss'])}"] if "val/loss" in metrics else []
    labels = (("steps", "steps"), ("tokens", "tokens"), ("tokens_per_s", "tokens/s"), ("wall_seconds", "wall time (s)"))
    parts += [f"{label}: {fmt(r[key])}" for key, label in labels if r.get(key) is not None]
    return "; ".join(parts) or "no metrics were recorded"


def add_metrics(doc: Document, run: Run) -> None:
    before, after = run.results.get("val_start") or {}, run.results.get("metrics") or {}
    names = sorted(set(before) | set(after))
    if names:
        doc.heading("Metrics")
        doc.table(["metric", "before fit (step 0)", "final"], [[n, before.get(n), after.get(n)] for n in names])


def add_curves(doc: Document, run: Run) -> None:
    doc.heading("Curves")
    if not run.columns:
        doc.text("no csv/metrics.csv: nothing was logged during training")
        return
    train, val = run.series("train/loss"), run.series("val/loss")
    start = (run.results.get("val_start") or {}).get("val/loss")
    marks = [(0.0, float(start), "validation before fit")] if start is not None else []
    doc.figure(plots.line_plot({"train/loss": train, "val/loss": val}, "loss", "step", "loss", marks), "loss / step")
    if run.tokens_at([0.0]) is not None:
        by_tokens = {name: _against_tokens(run, curve) for name, curve in (("train/loss", train), ("val/loss", val))}
        doc.figure(plots.line_plot(by_tokens, "loss", "tokens seen", "loss", marks), "loss / tokens seen")
    lrs = {name: points for name, points in run.columns.items() if name.startswith("lr-")}
    doc.figure(plots.line_plot(lrs, "learning rate", "step", "lr"), "learning rate")
    grad = {"train/grad_norm": run.series("train/grad_norm")}
    doc.figure(plots.line_plot(grad, "gradient norm", "step", "norm", logy=True), "gradient norm")
    doc.figure(plots.line_plot({"tokens/s": run.series(TOKENS_PER_S)}, "throughput", "step", "tokens/s"), "tokens/s")


def _against_tokens(run: Run, curve: list[tuple[float, float]]) -> list[tuple[float, float]]:
    tokens = run.tokens_at([step for step, _ in curve]) or []
    return [(t, y) for t, (_, y) in zip(tokens, curve, strict=True)]


def add_compute(doc: Document, compute: dict[str, Any] | None) -> None:
    if not compute:
        return
    doc.heading("Compute and cost")
    how = compute.get("definitions") or {}
    shown = {**COMPUTE_KEYS, **{k: k for k in compute if k not in COMPUTE_KEYS and k != "definitions"}}
    rows = []
    for key, label in shown.items():
        value = compute.get(key)
        if value is None:
            continue
        shown_value = f"{value:.2%}" if key == "mfu" and isinstance(value, int | float) else value
        rows.append([label, shown_value, how.get(key, "")])
    doc.table(["quantity", "value", "how"], rows)


def add_config(doc: Document, run: Run) -> None:
    doc.heading("Configuration")
    if run.overrides:
        doc.text("Differences from the defaults (the command line's overrides):")
        doc.preformatted("\n".join(run.overrides))
    else:
        doc.text("The defaults, no overrides.")
    choices = {k: v for k, v in (run.results.get("choices") or {}).items() if v is not None and k != "hydra"}
    if choices:
        doc.heading("Config group options", 3)
        doc.table(["group", "option"], [[k, v] for k, v in choices.items() if not k.startswith("hydra/")])
    p = run.provenance
    if not p and run.results.get("seed") is None:
        return
    doc.heading("Provenance", 3)
    git = p.get("git") or {}
    facts = {"seed": p.get("seed", run.results.get("seed")), "git commit": git.get("commit"), "dirty": git.get("dirty")}
    doc.table(["provenance", "value"], [[k, v] for k, v in facts.items() if v is not None])
    for key, title in (("command", "command"), ("rerun", "rerun it")):
        if p.get(key):
            doc.text(f"{title}:")
            doc.preformatted(p[key])
    if p.get("packages"):
        doc.table(["package", "version"], [[k, v or "not installed"] for k, v in p["packages"].items()])
    if p.get("hardware"):
        doc.mapping(p["hardware"], ("hardware", "value"))


def add_model(doc: Document, results: dict[str, Any]) -> None:
    model, params = results.get("model") or {}, results.get("parameters") or {}
    if not model and not params:
        return
    doc.heading("Model")
    facts = {k: model.get(k) for k in ("family", "pretrained") if model.get(k) is not None}
    facts.update({f"parameters {k}": params[k] for k in ("total", "trainable", "trainable_percent") if k in params})
    doc.table(["model", "value"], list(facts.items()))
    if isinstance(model.get("config"), dict):
        doc.mapping(model["config"], ("model config", "value"))


def add_data(doc: Document, data: dict[str, Any] | None, tokenizer: dict[str, Any] | None) -> None:
    if not data and not tokenizer:
        return
    doc.heading("Data")
    data = dict(data or {})
    pipeline = data.pop("pipeline", None)
    splits = {k: v for k, v in data.items() if isinstance(v, dict)}
    names = sorted({split for counts in splits.values() for split in counts})
    doc.table(["statistic", *names], [[k, *(v.get(s) for s in names)] for k, v in splits.items()])
    doc.table(["data", "value"], [[k, v] for k, v in data.items() if k not in splits])
    if pipeline:
        doc.heading("Cleaning pipeline", 3)
        keys = ["documents_in", "documents_kept", "documents_removed", "characters_in", "characters_removed", "seconds"]
        rows = [[s.get("name"), *(s.get(k) for k in keys), _inline(s.get("details"))] for s in pipeline]
        doc.table(["step", *keys, "details"], rows)
    if tokenizer:
        doc.heading("Tokenizer", 3)
        doc.mapping(tokenizer, ("tokenizer", "value"))


def _inline(mapping: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in (mapping or {}).items())


def add_eval(doc: Document, evaluation: dict[str, Any] | None) -> None:
    if not evaluation:
        return
    doc.heading("Evaluation")
    rows = []
    for name, task in (evaluation.get("tasks") or {}).items():
        metrics = task.get("metrics") or {}
        common = [task.get("type"), task.get("status"), task.get("n_samples")]
        rows += [[name, *common, m, v, ""] for m, v in metrics.items()] or [
            [name, *common, "", None, task.get("reason")]
        ]
    doc.table(["task", "type", "status", "samples", "metric", "value", "reason"], rows)
    summary = evaluation.get("summary") or {}
    if summary:
        doc.heading("Suite summary", 3)
        doc.text(f"average (normalised): {fmt(summary.get('average'))}. {summary.get('definition', '')}".strip())
        scores = summary.get("scores") or {}
        rows = [[n, s.get("metric"), s.get("value"), s.get("baseline"), s.get("normalized")] for n, s in scores.items()]
        doc.table(["task", "primary metric", "value", "random baseline", "normalised"], rows)
        doc.table(["status", "tasks"], [[k, v] for k, v in (summary.get("status") or {}).items() if v])


def add_forgetting(doc: Document, forgetting: dict[str, Any] | None) -> None:
    if not forgetting:
        return
    doc.heading("Forgetting")
    before, after = forgetting.get("before") or {}, forgetting.get("after") or {}
    keys = [k for k in dict.fromkeys([*before, *after]) if k != "seconds"]
    doc.table(["probe", "before fine-tuning", "after"], [[k, before.get(k), after.get(k)] for k in keys])


def add_samples(doc: Document, samples: list[dict[str, Any]] | None) -> None:
    if not samples:
        return
    doc.heading("Samples")
    for sample in samples:
        doc.text(f"step {fmt(sample.get('step'))}, prompt: {sample.get('prompt', '')!r}")
        doc.preformatted(str(sample.get("text", "")))
