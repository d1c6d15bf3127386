"""What document-aware packing costs per training step (`python -m bench.packing`).

The default GPT on the embedded corpus (documents of a few hundred to a few thousand tokens), one optimizer step
per sample with the real collation of each `data.packing`: `concat` (the reference), `doc_mask` (block-diagonal
masks through SDPA) and `pad` (one document per row). The variants alternate step by step in this process, so
load on the machine hits them alike. tokens/s counts tokens that carry a label (pads do not).

Prints a markdown table; `--quick` checks the script runs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import datasets
import torch
from omegaconf import OmegaConf

from bench.common import Row, Sample, build_model, compose_config, machine, paired_ratio, settle, span, stamp, table
from lightning_llm.data import TextDataModule
from lightning_llm.objectives import IGNORE_INDEX, CausalLM

PACKINGS = ("concat", "doc_mask", "pad")


def packed_data(packing: str, block_size: int, batch_size: int) -> TextDataModule:
    """The default data packed as `packing`, set up, with a causal LM objective of its own."""
    cfg = compose_config([f"data.packing={packing}", f"data.block_size={block_size}", f"data.batch_size={batch_size}"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("_target_")
    datamodule = TextDataModule(objective=CausalLM(), tokenizer=OmegaConf.to_container(cfg.tokenizer), **data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def measure(block_size: int, batch_size: int, warmup: int, steps: int) -> list[Row]:
    cfg = compose_config([f"model.block_size={block_size}"])
    streams, objectives, models, optimizers = {}, {}, {}, {}
    for packing in PACKINGS:
        datamodule = packed_data(packing, block_size, batch_size)
        torch.manual_seed(0)
        models[packing] = build_model(cfg.model, vocab_size=datamodule.tokenizer.vocab_size)
        objectives[packing] = datamodule.objective
        objectives[packing].configure(datamodule.objective_context(models[packing]))  # collation needs it
        streams[packing] = itertools.cycle(datamodule.train_dataloader())
        optimizers[packing] = torch.optim.AdamW(models[packing].parameters(), lr=1e-4)
    samples: dict[str, list[Sample]] = {p: [] for p in PACKINGS}
    labelled: dict[str, list[int]] = {p: [] for p in PACKINGS}
    for step in range(warmup + steps):
        for packing in PACKINGS:
            batch = next(streams[packing])
            start = stamp()
            loss = objectives[packing].forward(models[packing], batch).loss
            loss.backward()
            optimizers[packing].step()
            optimizers[packing].zero_grad(set_to_none=True)
            if step >= warmup:
                samples[packing].append(span(start, stamp()))
                labelled[packing].append(int((batch["labels"] != IGNORE_INDEX).sum()))
    group = f"gpt default, block {block_size}, batch {batch_size}"
    rows = []
    for packing in PACKINGS:
        tokens = round(sum(labelled[packing]) / len(labelled[packing]))
        row = Row(group, packing, samples[packing], tokens, reference=packing == "concat")
        if packing != "concat":
            row.paired = paired_ratio(row.samples, samples["concat"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.packing", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few steps: checks the script, measures nothing")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    warmup, steps = (1, 2) if args.quick else (3, 15)
    started = time.perf_counter()
    rows = measure(256, 16, warmup, steps) + measure(1024, 4, warmup, steps)
    settle(rows)
    print(f"# Packing ({machine().get('cpu', '')}, {args.threads} threads)\n")
    print(table(rows))
    print(f"\n[bench.packing] {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
