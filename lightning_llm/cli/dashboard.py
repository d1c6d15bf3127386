"""`lightning-llm dashboard --entity E --project P [--run FOLDER ...]`: a saved W&B workspace for the project,
built as code (wandb-workspaces) from what the given runs log (run or sweep folders; default every run under
logs/): losses against steps and tokens, learning rate and gradient norm, throughput/MFU/cost, eval tables, privacy
epsilon, preference metrics, and a sweep section (parallel coordinates, parameter importance), runs grouped as the
W&B logger groups them. Without W&B (no API key or no network, or --offline) it writes the workspace to a JSON file
and says how to push it: `lightning-llm dashboard --push FILE`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entity", help="the W&B entity (user or team) the workspace belongs to")
    parser.add_argument("--project", help="the W&B project of the runs (conf/logger/wandb.yaml: lightning-llm)")
    parser.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a run or sweep folder whose logged keys choose the panels (repeat; default: logs/)",
    )
    parser.add_argument("--name", help="the workspace's name (default: lightning-llm <project>)")
    parser.add_argument("--out", metavar="FILE", help="where the offline spec goes (default logs/dashboards/P.json)")
    parser.add_argument("--offline", action="store_true", help="write the spec file even when W&B is reachable")
    parser.add_argument("--push", metavar="FILE", help="save a spec file written offline as a W&B workspace")


def default_runs() -> list:
    """Every run and sweep folder under logs/ of the working directory."""
    from pathlib import Path

    logs = Path("logs")
    runs = sorted(p.parent for p in logs.glob("*/*/results.json"))
    return runs + sorted(p.parent for p in logs.glob("*/*/multirun.yaml"))


def run(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    from lightning_llm.errors import ConfigError
    from lightning_llm.report.dashboards import build_workspace, push_spec, read_keys, write_spec
    from lightning_llm.training.loggers import wandb_online

    if args.push:
        if not Path(args.push).is_file():
            raise ConfigError(f"--push {args.push} does not exist: give a file `lightning-llm dashboard` wrote")
        print(f"saved the workspace: {push_spec(Path(args.push)).url}")
        return
    if not args.entity or not args.project:
        raise ConfigError("give --entity (your W&B user or team) and --project (the runs' W&B project)")
    runs = [Path(r) for r in args.run] or default_runs()
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing or not runs:
        raise ConfigError(f"--run {missing[0]} is no folder" if missing else "no runs under logs/: give --run FOLDER")
    keys = read_keys(runs)
    if not keys.metrics:
        raise ConfigError(f"the runs log no metrics (no csv/metrics.csv in {', '.join(map(str, runs))})")
    workspace = build_workspace(keys, args.entity, args.project, args.name or f"lightning-llm {args.project}")
    panels = sum(len(s.panels) for s in workspace.sections)
    what = f"{len(workspace.sections)} sections, {panels} panels from {len(runs)} run(s)"
    if args.offline or not wandb_online():
        out = write_spec(workspace, Path(args.out or f"logs/dashboards/{args.project}.json"))
        print(f"W&B is not reachable (or --offline): wrote the workspace ({what}) to {out}; save it where W&B is "
              f"reachable (WANDB_API_KEY set) with: lightning-llm dashboard --push {out}", file=sys.stderr)  # fmt: skip
        return
    print(f"saved the workspace ({what}): {workspace.save().url}")
