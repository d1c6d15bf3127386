"""Reports (lightning_llm.report): numbers read back out of report.md, self-contained HTML, seeds as statistics,
config differences, the `report` verb and the W&B table. Fixture folders are written directly: no training."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightning_llm.errors import ConfigError
from lightning_llm.report import (
    log_to_wandb,
    report_quietly,
    stats,
    write_comparison,
    write_run_report,
    write_sweep_report,
)
from lightning_llm.report.compare import config_differences

from .browser import open_page

FINAL_VAL_LOSS = 2.71828
CONFIG = {
    "defaults": ["_self_", {"override hydra/job_logging": "stdout"}],
    "seed": 1,
    "optimized_metric": "val/loss",
    "model": {"n_layer": 2, "n_embd": 64, "dropout": 0.0},
    "optimizer": {"lr": 0.01, "betas": [0.9, 0.95]},
    "paths": {"log_dir": "logs", "output_dir": "${hydra:runtime.output_dir}"},
    "hydra": {"run": {"dir": "logs/runs/x"}},
}


def write_run(
    folder: Path,
    status: str = "completed",
    val_loss: float | None = FINAL_VAL_LOSS,
    overrides: list[str] | None = None,
    config: dict[str, Any] | None = None,
    curves: bool = True,
    **extra: Any,
) -> Path:
    """A run folder as the recipe leaves it: results.json, csv/metrics.csv, provenance.json, .hydra/."""
    overrides = overrides or ["optimizer.lr=0.01"]
    (folder / ".hydra").mkdir(parents=True)
    results: dict[str, Any] = {"status": status, "overrides": overrides, "seed": 1, **extra}
    if val_loss is not None:
        results["val_start"] = {"val/loss": 6.25, "val/perplexity": 518.0}
        results["metrics"] = {"val/loss": val_loss, "val/perplexity": math.exp(val_loss), "train/loss": 2.5}
        results.update(steps=40, tokens=10240, tokens_per_s=1234.5, wall_seconds=12.5, fit_seconds=9.0)
    (folder / "results.json").write_text(json.dumps(results))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or CONFIG))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    provenance = {
        "git": {"commit": "abc123", "dirty": False},
        "packages": {"torch": "2.13.0", "optuna": None},
        "hardware": {"platform": "Linux", "cpus_available": 2, "gpus": []},
        "seed": 1,
        "command": "train.py " + " ".join(overrides),
        "rerun": f"python train.py --config-path {folder}/.hydra --config-name config",
    }
    (folder / "provenance.json").write_text(json.dumps(provenance))
    if curves and val_loss is not None:
        (folder / "csv").mkdir()
        columns = ["epoch", "step", "train/loss", "train/grad_norm", "lr-AdamW/pg1", "train/tokens"]
        columns += ["train/device/items_per_sec", "val/loss", "val/perplexity"]
        with (folder / "csv" / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for step in range(0, 41, 5):
                writer.writerow({"epoch": 0, "step": step, "train/loss": 6 - step / 10, "train/grad_norm": 1 + step,
                                 "lr-AdamW/pg1": 1e-2 * min(1, (step + 1) / 10), "train/tokens": (step + 1) * 256,
                                 "train/device/items_per_sec": 1000 + step})  # fmt: skip
            for step, loss in ((20, 3.5), (40, val_loss)):
                writer.writerow({"epoch": 0, "step": step, "val/loss": loss, "val/perplexity": math.exp(loss)})
    return folder


FULL = {
    "choices": {"model": "gpt", "data": "pydoc_topics"},
    "model": {"family": "gpt", "pretrained": None, "config": {"n_layer": 2, "n_embd": 64}},
    "parameters": {"total": 120000, "trainable": 120000, "trainable_percent": 100.0},
    "tokenizer": {"type": "sentencepiece", "vocab_size": 512},
    "data": {
        "documents": {"train": 90, "val": 10},
        "tokens": {"train": 9000, "val": 1000},
        "vocab_size": 512,
        "pipeline": [
            {
                "name": "dedup_exact",
                "documents_in": 100,
                "documents_kept": 97,
                "documents_removed": 3,
                "characters_in": 5000,
                "characters_removed": 120,
                "details": {"removed": 3},
                "seconds": 0.1,
            }
        ],
    },  # fmt: skip
    "forgetting": {"before": {"loss": 3.0, "perplexity": 20.1}, "after": {"loss": 3.4, "perplexity": 29.96}},
    "eval": {
        "tasks": {
            "lambada": {"type": "prompt", "status": "ok", "metrics": {"accuracy": 0.25}, "n_samples": 8},
            "copa": {"type": "choice", "status": "skipped", "reason": "needs a decoder"},
        },
        "summary": {
            "average": 0.1,
            "scores": {"lambada": {"metric": "accuracy", "value": 0.25, "baseline": 0.0, "normalized": 0.25}},
            "status": {"ok": ["lambada"]},
        },
    },  # fmt: skip
    "samples": [{"step": 40, "prompt": "def ", "text": "def foo(): return 1"}],
    "compute": {"flops_total": 1.5e12, "mfu": 0.0123, "energy_kwh": 0.002, "device": "cpu"},
}


def md_table(md: str, first_header: str) -> list[list[str]]:
    """The rows of report.md's first table whose first header is `first_header`."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_header} |") and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split(" | ")])
            return rows
    raise AssertionError(f"no table headed {first_header!r} in report.md")


def assert_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "<script" not in text
    images = re.findall(r'<img src="([^"]+)"', text)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.findall(r'(?:src|href)="(?!data:)', text)
    assert_well_formed(text)


class TagChecker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"


def assert_well_formed(text: str) -> None:
    """Every element the page opens is closed, in order (what a browser would otherwise have to repair)."""
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert checker.open == []


def test_run_report_numbers_match_results(tmp_path):
    run = write_run(tmp_path / "run", **FULL)
    written = write_run_report(run)
    assert [p.name for p in written] == ["report.md", "report.html"]
    md = (run / "report.md").read_text()
    metrics = {row[0]: row[1:] for row in md_table(md, "metric")}
    results = json.loads((run / "results.json").read_text())
    assert float(metrics["val/loss"][1]) == results["metrics"]["val/loss"] == FINAL_VAL_LOSS
    assert float(metrics["val/loss"][0]) == results["val_start"]["val/loss"]
    assert f"final val/loss: {FINAL_VAL_LOSS}" in md
    assert dict((r[0], r[1]) for r in md_table(md, "quantity"))["MFU (model FLOPs utilisation)"] == "1.23%"
    assert md_table(md, "step")[0][:4] == ["dedup_exact", "100", "97", "3"]
    evals = md_table(md, "task")
    assert ["lambada", "prompt", "ok", "8", "accuracy", "0.25", ""] in evals
    assert evals[1][:3] == ["copa", "choice", "skipped"] and evals[1][-1] == "needs a decoder"
    assert md_table(md, "probe") == [["loss", "3", "3.4"], ["perplexity", "20.1", "29.96"]]
    assert "optimizer.lr=0.01" in md and "abc123" in md and "def foo(): return 1" in md
    assert ["parameters trainable_percent", "100"] in md_table(md, "model")
    page = run / "report.html"
    assert_self_contained(page)
    assert page.read_text().count("<img ") == 5  # loss/step, loss/tokens, lr, grad norm, tokens/s


def test_tokens_axis_interpolates_train_tokens(tmp_path):
    from lightning_llm.report.load import load_run

    run = load_run(write_run(tmp_path / "run"))
    assert run.tokens_at([0.0, 5.0, 7.5, 40.0]) == [256.0, 1536.0, 2176.0, 10496.0]
    assert run.val_loss_curve()[0] == (0.0, 6.25)  # validation before fit, at step 0


def test_failed_and_eval_only_runs_get_reports(tmp_path):
    failed = write_run(tmp_path / "failed", status="failed", val_loss=None, error="ConfigError: data.path not found")
    write_run_report(failed)
    md = (failed / "report.md").read_text()
    assert "**status: failed**" in md and "data.path not found" in md and "no csv/metrics.csv" in md
    assert_self_contained(failed / "report.html")
    eval_only = write_run(tmp_path / "eval", val_loss=None, eval=FULL["eval"])
    write_run_report(eval_only)
    assert ["lambada", "prompt", "ok", "8", "accuracy", "0.25", ""] in md_table(
        (eval_only / "report.md").read_text(), "task"
    )
    bare = tmp_path / "bare" / ".hydra"
    bare.mkdir(parents=True)
    (bare / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    write_run_report(bare.parent)  # a failed start: only the config
    assert "unknown (no results.json)" in (bare.parent / "report.md").read_text()


A, B = [2.0, 2.1, 2.2], [2.5, 2.6, 2.8]


def test_statistics_match_scipy_and_a_hand_computation():
    from scipy.stats import ttest_ind

    assert stats.welch_p(A, B) == pytest.approx(ttest_ind(A, B, equal_var=False).pvalue, rel=1e-12)
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t(0.975, df=3) * s / sqrt(n), s^2 = 5/3
    assert (s.n, s.mean, s.std) == (4, 2.5, pytest.approx(math.sqrt(5 / 3)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert stats.summarize([1.0]) == stats.Summary(1, 1.0, None, None, None)
    p = stats.welch_p(A, B)
    assert stats.compare_in_words("b", B, "a", A) == f"a is lower than b (p={p:.3g} < 0.05, n=3 vs 3)"
    assert "no significant difference" in stats.compare_in_words("a", A, "c", [2.05, 2.2, 2.0])
    assert "cannot be tested" in stats.compare_in_words("a", [1.0, 1.0], "b", [1.0, 1.0])


def write_sweep(folder: Path) -> Path:
    """2 configurations x 3 seeds, and a failed job."""
    job = 0
    for (lr, schedule), losses in (((0.001, "cosine"), A), ((0.01, "linear"), B)):
        for seed, loss in enumerate(losses):
            write_run(folder / str(job), val_loss=loss, overrides=[f"optimizer.lr={lr}", f"scheduler={schedule}",
                                                                   f"seed={seed}"])  # fmt: skip
            job += 1
    write_run(folder / str(job), status="failed", val_loss=None, error="TrainingDiverged: loss is nan",
              overrides=["optimizer.lr=1.0", "scheduler=cosine", "seed=0"])  # fmt: skip
    (folder / "summary.csv").write_text("job,overrides,status,val/loss,error\n")
    return folder


def test_sweep_report_seeds_as_statistics(tmp_path):
    from scipy.stats import ttest_ind

    sweep = write_sweep(tmp_path / "sweep")
    write_sweep_report(sweep)
    md = (sweep / "report.md").read_text()
    groups = {row[0]: row[1:] for row in md_table(md, "configuration")}
    low, high = "optimizer.lr=0.001 scheduler=cosine", "optimizer.lr=0.01 scheduler=linear"
    assert groups[low][:3] == ["3", "2.1", "0.1"]
    assert float(groups[high][1]) == pytest.approx(sum(B) / 3, rel=1e-5)
    assert float(groups[high][2]) == pytest.approx(0.152753, rel=1e-5)
    (test,) = md_table(md, "A")
    p = ttest_ind(A, B, equal_var=False).pvalue
    assert test[2:4] == ["3", "3"] and float(test[4]) == pytest.approx(p, rel=1e-5)
    assert f"{low} is lower than {high} (p={p:.3g} < 0.05, n=3 vs 3)" in md
    assert ["6", "failed", "TrainingDiverged: loss is nan"] in md_table(md, "failed job")
    page = (sweep / "report.html").read_text()
    assert "val/loss / optimizer.lr" in page and "val/loss / scheduler" in page and "val/loss, all jobs" in page
    assert_self_contained(sweep / "report.html")


def test_sweep_jobs_are_named_by_their_swept_values(tmp_path, monkeypatch):
    from lightning_llm.report import sweep_report

    legends, line_plot = [], sweep_report.plots.line_plot
    monkeypatch.setattr(
        sweep_report.plots,
        "line_plot",
        lambda curves, *a, **k: legends.append(list(curves)) or line_plot(curves, *a, **k),
    )
    sweep = write_sweep(tmp_path / "sweep")
    write_sweep_report(sweep)
    jobs = {row[0]: row[1] for row in md_table((sweep / "report.md").read_text(), "job")}
    assert jobs["0"] == "optimizer.lr=0.001 scheduler=cosine seed=0"
    assert jobs["5"] == "optimizer.lr=0.01 scheduler=linear seed=2"
    assert legends[0] == list(jobs.values()), "the curves are labelled by the swept values, not by job numbers"
    optuna = tmp_path / "optuna"  # long floats, a point tried twice, fixed overrides that every job shares
    for job, lr in enumerate((0.0019960425587510337, 0.0019960425587510337, 0.00782)):
        write_run(optuna / str(job), overrides=[f"optimizer.lr={lr}", "model.n_layer=2", "paths.cache_dir=/c"])
    (optuna / "summary.csv").write_text("job,overrides,status,val/loss,error\n")
    assert sweep_report.job_names(sweep_report.load_sweep(optuna)) == {
        "0": "optimizer.lr=0.001996 (job 0)",
        "1": "optimizer.lr=0.001996 (job 1)",
        "2": "optimizer.lr=0.00782",
    }


def test_a_long_legend_goes_below_the_axes_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lightning_llm.report.plots import line_figure

    curves = {f"optimizer.lr=0.00{i}1 model.n_embd=128 seed={i}": [(0, 6.0 - i / 10), (100, 4.0)] for i in range(9)}
    fig = line_figure(curves, "val/loss of every job", "step", "val/loss")
    renderer = FigureCanvasAgg(fig).get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(curves)
    box, axes, figure = legend.get_window_extent(renderer), fig.axes[0].get_tightbbox(renderer), fig.bbox
    assert figure.y0 <= box.y0 and box.y1 <= axes.y0, "below the axes and their tick labels"
    assert figure.x0 <= box.x0 and box.x1 <= figure.x1, (box, figure)


def test_optuna_sweep_adds_the_study(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    study = optuna.create_study(study_name="s", storage="sqlite:///logs/optuna.db", direction="minimize")
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1.0, log=True) + (3.0, 2.0, 2.5)[t.number], n_trials=3)
    sweep = tmp_path / "logs" / "multiruns" / "opt"
    for job, lr in enumerate((0.1, 0.01, 0.001)):
        write_run(sweep / str(job), overrides=[f"optimizer.lr={lr}"])
    (sweep / "optimization_results.yaml").write_text("name: optuna\nbest_params:\n  lr: 0.01\nbest_value: 2.0\n")
    multirun = {"paths": {"log_dir": "logs"}, "hydra": {"sweeper": {"storage": "sqlite:///${paths.log_dir}/optuna.db",
                                                                   "study_name": "s"}}}  # fmt: skip
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    write_sweep_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "## Optuna study s" in md and "optimisation history" in md
    assert ["value", "2"] in md_table(md, "best")
    assert "parameter importances" in md  # a figure, or why not (fANOVA needs scikit-learn)


def test_comparison_lists_exactly_the_differing_keys(tmp_path):
    other = json.loads(json.dumps(CONFIG))
    other["model"]["n_layer"] = 4
    other["optimizer"]["betas"] = [0.9, 0.99]
    other["hydra"]["run"]["dir"] = "elsewhere"
    other["paths"]["output_dir"] = "logs/runs/y"
    other["defaults"] = ["_self_"]
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", val_loss=3.0, config=other)
    assert set(config_differences([CONFIG, other])) == {"model.n_layer", "optimizer.betas"}
    written = write_comparison([a, b, write_sweep(tmp_path / "sweep")], tmp_path / "out")
    md = written[0].read_text()
    assert {row[0] for row in md_table(md, "key")} == {"model.n_layer", "optimizer.betas"}
    assert md_table(md, "key")[0][:3] == ["model.n_layer", "2", "4"]
    values = {row[0]: row[1:] for row in md_table(md, "metric")}
    assert values["val/loss"][:3] == [str(FINAL_VAL_LOSS), "3", "2"]  # a, b, then the sweep's job 0
    assert "sweep/6" in md_table(md, "run")[-1]
    assert_self_contained(written[1])


def test_report_verb(tmp_path, monkeypatch, capsys):
    import argparse

    from lightning_llm.cli import report

    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    run = write_run(tmp_path / "run")
    report.run(parser.parse_args([str(run)]))
    assert (run / "report.html").is_file() and "wrote" in capsys.readouterr().out
    sweep = write_sweep(tmp_path / "sweep")
    report.run(parser.parse_args([str(sweep), "--metric", "val/perplexity"]))
    assert "metric: val/perplexity" in (sweep / "report.md").read_text()
    monkeypatch.chdir(tmp_path)
    report.run(parser.parse_args(["--compare", str(run), str(sweep)]))
    assert len(list((tmp_path / "logs" / "compare").glob("*/report.html"))) == 1
    report.run(parser.parse_args(["--compare", str(run), str(sweep / "0"), "--out", "cmp"]))
    assert (tmp_path / "cmp" / "report.md").is_file()
    (tmp_path / "empty").mkdir()
    for argv, words in (
        ([str(tmp_path / "missing")], "is not a folder"),
        ([str(tmp_path / "empty")], "is neither a run"),
        (["--compare", str(run), str(tmp_path / "empty")], "is neither a run"),
        ([str(run), str(sweep)], "add --compare"),
    ):
        with pytest.raises(ConfigError, match=words) as err:
            report.run(parser.parse_args(argv))
        assert "\n" not in str(err.value)


def test_importing_reports_is_cheap():
    code = (
        "import sys, argparse, lightning_llm.report, lightning_llm.cli.report as r;"
        "r.add_arguments(argparse.ArgumentParser());"
        "heavy = {'torch', 'lightning', 'matplotlib', 'scipy', 'optuna', 'wandb'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class FakeTable:
    def __init__(self, columns: list[str], data: list[list[Any]]) -> None:
        self.columns, self.data = columns, data


class FakeRun:
    def __init__(self) -> None:
        self.logged: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}

    def log(self, data: dict[str, Any]) -> None:
        self.logged.update(data)


def test_log_to_wandb_with_a_fake_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert log_to_wandb(FULL) is False  # wandb not imported: nothing happens, nothing is imported
    assert "wandb" not in sys.modules
    fake = types.SimpleNamespace(run=None, Table=FakeTable)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert log_to_wandb(FULL) is False  # no active run
    fake.run = FakeRun()
    assert log_to_wandb(FULL) is True
    table = fake.run.logged["eval/results"]
    assert table.columns == ["task", "metric", "value", "status"]
    assert table.data == [["lambada", "accuracy", 0.25, "ok"], ["copa", None, None, "skipped"]]
    expected = {
        "eval/summary/average": 0.1,
        "eval/summary/lambada/value": 0.25,
        "eval/summary/lambada/normalized": 0.25,
    }
    assert fake.run.summary == expected and fake.run.logged["eval/summary/average"] == 0.1
    assert log_to_wandb({"status": "failed"}) is False


def test_report_quietly_turns_errors_into_a_warning(tmp_path, caplog):
    assert report_quietly(write_run_report, tmp_path / "nothing") == []  # no folder: a warning, not an error
    assert "python -m lightning_llm report" in caplog.text
    assert report_quietly(write_run_report, write_run(tmp_path / "run"))[0].name == "report.md"


def test_html_opens_in_headless_chromium(tmp_path):
    page = write_run_report(write_run(tmp_path / "run", **FULL))[1]
    shot = tmp_path / "report.png"
    assert open_page(page, shot) == []
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("values", "logy"),
    [
        ([1e-4, 1e-3, 3.3e-4], False),  # a learning rate: the longest plain tick labels ("0.0010")
        ([5_000.0, 250_000.0, 980_000.0], False),  # tokens/s below matplotlib's switch to an offset
        ([0.7, 6.0, 3.0], True),  # a gradient norm on a log axis ("6 x 10^0")
    ],
)
def test_line_plot_margins_keep_every_label_inside_the_figure(values, logy):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lightning_llm.report.plots import LINE_MARGINS, _figure

    fig, ax = _figure("learning rate", "tokens seen", "tokens/s", margins=LINE_MARGINS)
    ax.plot([0, 1_000, 2_000_000], values, label="lr-AdamW/pg1")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    renderer = FigureCanvasAgg(fig).get_renderer()  # the canvas savefig draws on
    inside, figure = ax.get_tightbbox(renderer), fig.bbox
    assert figure.x0 <= inside.x0 and inside.x1 <= figure.x1, (inside, figure)
    assert figure.y0 <= inside.y0 and inside.y1 <= figure.y1, (inside, figure)
