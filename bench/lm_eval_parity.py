"""Our multiple-choice scores against lm-evaluation-harness's, item by item, on the same model and items.

    python -m bench.lm_eval_parity [--run RUN_DIR] [--items 60] [--steps 300]

A model trained by `python train.py` (or `--run`, an existing run folder) is exported as a Hugging Face folder
(`python -m lightning_llm export`); both sides load that folder. The items are ARC-style questions about Python
built-ins, generated here (60 to evaluate, 20 as the few-shot pool), written as JSON lines; lm-eval reads them
through a local custom task (the same prompt as conf/eval/tasks/arc_easy.yaml: `Question: ...\\nAnswer:`,
choices after a space, acc and acc_norm), we through `MultipleChoiceTask` with `fewshot_sampler=harness`. For
0-shot and 5-shot: acc and acc_norm of each side, how many items' predictions differ, and the largest difference
between the two sides' log-likelihoods of any choice. Needs `pip install lm-eval` (not a project dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_llm.eval.tasks.harness import write_choice_task  # noqa: E402

FACTS = {
    "returns the number of items in a container": "len",
    "prints its arguments to standard output": "print",
    "opens a file and returns a file object": "open",
    "returns a new sorted list from an iterable": "sorted",
    "returns the absolute value of a number": "abs",
    "rounds a number to a given precision": "round",
    "returns the largest item of an iterable": "max",
    "returns the smallest item of an iterable": "min",
    "adds up the items of an iterable": "sum",
    "returns an iterator of tuples from several iterables": "zip",
    "returns pairs of a count and a value from an iterable": "enumerate",
    "applies a function to every item of an iterable": "map",
    "keeps the items of an iterable for which a function is true": "filter",
    "returns a reverse iterator": "reversed",
    "tells whether an object is an instance of a class": "isinstance",
    "returns the type of an object": "type",
    "converts a value to an integer": "int",
    "converts a value to a string": "str",
    "reads a line from input": "input",
    "returns the names in a scope": "dir",
}


def items(n: int, seed: int) -> list[dict]:
    """ARC-style rows: a question, four choices (one right) with labels A-D, the answer key."""
    rng = random.Random(seed)
    names = sorted(set(FACTS.values()))
    rows = []
    for i in range(n):
        what, answer = rng.choice(sorted(FACTS.items()))
        choices = [answer, *rng.sample([x for x in names if x != answer], 3)]
        rng.shuffle(choices)
        label = "ABCD"[choices.index(answer)]
        phrasing = ["Which built-in function {}?", "In Python, which function {}?", "What {} in Python?"][i % 3]
        rows.append({"question": phrasing.format(what), "choices": {"text": choices, "label": list("ABCD")},
                     "answerKey": label})  # fmt: skip
    return rows


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def harness_scores(folder: Path, task_dir: Path, shots: int) -> list[dict]:
    """Per item (in order): acc, acc_norm and the log-likelihood of each choice, from lm-eval's HF model."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(folder), "dtype": "float32"},
        tasks=["parity_mc"],
        num_fewshot=shots,
        task_manager=TaskManager(include_path=str(task_dir)),
        log_samples=True,
        batch_size=8,
        device="cpu",
    )
    samples = sorted(out["samples"]["parity_mc"], key=lambda s: s["doc_id"])
    return [
        {"acc": s["acc"], "acc_norm": s["acc_norm"], "lls": [float(r[0]) for r in s["filtered_resps"]]} for s in samples
    ]


def our_scores(folder: Path, items_path: Path, pool_path: Path, shots: int) -> list[dict]:
    """The same, from our MultipleChoiceTask's items and our model's log-likelihoods (the HF folder loaded)."""
    from lightning_llm.eval.suite import eval_lm
    from lightning_llm.eval.tasks import MultipleChoiceTask
    from lightning_llm.eval.tasks.base import EvalEnv
    from lightning_llm.inference import load_for_inference

    model, tokenizer = load_for_inference(str(folder))
    lm = eval_lm(model, tokenizer, batch_size=8)
    task = MultipleChoiceTask(
        name="parity_mc",
        path=str(items_path),
        fewshot_path=str(pool_path),
        columns=["question", "choices", "answerKey"],
        context="Question: {{ question }}\nAnswer:",
        choices="choices.text",
        gold="choices.label.index(answerKey)",
        num_fewshot=shots,
        fewshot_sampler="harness",
        metrics=["acc", "acc_norm"],
    )
    env = EvalEnv(seed=1234, output_dir=folder.parent, cache_dir=str(folder.parent / "cache"))
    rows, pool = task.load(env, need_pool=shots > 0)
    sampler = task.sampler(pool, env)
    scored = []
    for i, row in enumerate(rows):
        item = task.item(row, i, sampler)
        lls = [r.logprob for r in lm.loglikelihood(list(zip(item.contexts, item.continuations, strict=True)))]
        pred = max(range(len(lls)), key=lls.__getitem__)
        norm = max(range(len(lls)), key=lambda c, lls=lls, item=item: lls[c] / max(1, len(item.choices[c])))
        scored.append({"acc": float(pred == item.gold), "acc_norm": float(norm == item.gold), "lls": lls})
    return scored


def train_and_export(folder: Path, steps: int, run: str | None) -> Path:
    if run is None:
        run = str(folder / "run")
        args = [f"trainer.max_steps={steps}", "~callbacks.sample", f"hydra.run.dir={run}"]
        print(f"[bench] python train.py {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "train.py", *args], check=True, capture_output=True)
    hf = folder / "hf"
    subprocess.run([sys.executable, "-m", "lightning_llm", "export", run, str(hf)], check=True, capture_output=True)
    return hf


def main(run: str | None, n_items: int, steps: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf = train_and_export(folder, steps, run)
        from lightning_llm.tokenizers import HFTokenizer

        print(f"the exported tokenizer opens a text with bos: {HFTokenizer.from_pretrained(hf).adds_bos}")
        items_path = write_jsonl(items(n_items, seed=1), folder / "items.jsonl")
        pool_path = write_jsonl(items(20, seed=2), folder / "pool.jsonl")
        task_dir = folder / "tasks"
        write_choice_task(task_dir, "parity_mc", items_path, pool_path)
        for shots in (0, 5):
            theirs, ours = harness_scores(hf, task_dir, shots), our_scores(hf, items_path, pool_path, shots)
            row = {"shots": shots, "items": len(ours)}
            for metric in ("acc", "acc_norm"):
                row[f"{metric} lm-eval"] = round(sum(s[metric] for s in theirs) / len(theirs), 4)
                row[f"{metric} ours"] = round(sum(s[metric] for s in ours) / len(ours), 4)
                pairs = zip(theirs, ours, strict=True)
                row[f"{metric} items differing"] = sum(a[metric] != b[metric] for a, b in pairs)
            row["max |ll diff|"] = max(
                abs(x - y) for a, b in zip(theirs, ours, strict=True) for x, y in zip(a["lls"], b["lls"], strict=True)
            )
            rows.append(row)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.2e}" if c == "max |ll diff|" else str(row[c]) for c in columns) + " |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.lm_eval_parity", description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a run folder to export (default: train one)")
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--steps", type=int, default=300)
    options = parser.parse_args()
    main(options.run, options.items, options.steps)
