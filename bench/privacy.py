"""DP-SGD against no privacy on the same run: canary exposure, extraction, validation loss and step time.

    python -m bench.privacy [--steps 600] [--repeats 50]

Three runs of the default experiment (`python train.py`, the embedded corpus), the same seed and steps, with
10 planted canaries inserted `--repeats` times each (`data.canaries`), evaluated by `eval=privacy`:
`privacy=none`, `privacy=dp privacy.target_epsilon=8` and `=1`. Printed as a table (exposure of the inserted
canaries and of never-inserted controls, greedy extraction of canaries and of training texts, final val/loss,
ms per training step, the epsilon spent).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import load_average

RUNS = {"none": ["privacy=none"], "dp, eps 8": ["privacy=dp", "privacy.target_epsilon=8"]}
RUNS["dp, eps 1"] = ["privacy=dp", "privacy.target_epsilon=1"]


def run(name: str, overrides: list[str], folder: Path, steps: int, repeats: int) -> dict:
    out = folder / name.replace(", ", "_").replace(" ", "")
    args = [*overrides, "eval=privacy", "data.canaries.n=10", f"data.canaries.repeats={repeats}"]
    args += [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps // 2}", "~callbacks.sample"]
    print(f"[bench] {name}: python train.py {' '.join(args)}", flush=True)
    done = subprocess.run([sys.executable, "train.py", *args, f"hydra.run.dir={out}"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    tasks = results["eval"]["tasks"]
    canary, memo = tasks["canary_exposure"]["metrics"], tasks["memorization"]["metrics"]
    return {
        "run": name,
        "exposure": round(canary["exposure"], 2),
        "exposure (controls)": round(canary["exposure_control"], 2),
        "canary extraction": canary["canary_extraction_rate"],
        "text extraction": memo["extraction_rate"],
        "val/loss": round(results["metrics"]["val/loss"], 3),
        "ms/step": round(1000 * results["fit_seconds"] / results["steps"], 1),
        "epsilon": (results.get("privacy") or {}).get("epsilon", "inf"),
    }


def main(steps: int, repeats: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        rows = [run(name, overrides, Path(folder), steps, repeats) for name, overrides in RUNS.items()]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if c == "run" else "---:" for c in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print(f"load average (1/5/15 min): {load_average()}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.privacy", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=50)
    options = parser.parse_args()
    main(options.steps, options.repeats)
