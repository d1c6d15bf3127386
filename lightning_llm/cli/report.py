"""`python -m lightning_llm report <run or sweep folder>`: (re)build its report.md and self-contained report.html.
`python -m lightning_llm report --compare A B ... [--out DIR]`: runs and sweeps side by side (val curves,
metrics, the config keys that differ) in DIR (default logs/compare/<date>_<time>)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folders", nargs="+", metavar="FOLDER", help="a run folder or a sweep folder (several with --compare)"
    )
    parser.add_argument("--compare", action="store_true", help="compare the folders instead of reporting on one")
    parser.add_argument("--out", help="where --compare writes (default logs/compare/<date>_<time>)")
    parser.add_argument("--metric", help="a sweep's metric (default: its optimized_metric, else val/loss)")


def run(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from lightning_llm.errors import ConfigError
    from lightning_llm.report import write_comparison, write_run_report, write_sweep_report
    from lightning_llm.report.load import check_folder

    if args.compare:
        for folder in args.folders:
            check_folder(Path(folder), "report --compare")
        out = Path(args.out or Path("logs") / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S"))
        written = write_comparison(args.folders, out)
    else:
        if len(args.folders) > 1 or args.out:
            raise ConfigError("report takes one run or sweep folder: add --compare to compare several (--out with it)")
        folder = Path(args.folders[0])
        kind = check_folder(folder)
        written = write_run_report(folder) if kind == "run" else write_sweep_report(folder, metric=args.metric)
    print(f"wrote {', '.join(str(p) for p in written)}")
