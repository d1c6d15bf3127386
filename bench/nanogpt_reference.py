"""A reference training loop written to nanoGPT's CPU "baby GPT" recipe (its train.py and model.py, read, not
copied): 4 layers x 4 heads x 128, block 64, batch 12, 2000 iterations, no dropout, no biases, GELU, weight tying,
N(0, 0.02) init with the residual projections scaled by 1/sqrt(2 L), AdamW (lr 1e-3, betas 0.9/0.99, weight decay
0.1 on matrices only), 100 warmup iterations then cosine to 1e-4, gradient clipping at 1.0, batches of random
contiguous windows of the training stream. Every 250 iterations (and at the last) it does what nanoGPT's
`estimate_loss` does with `--eval_iters=20` (its CPU command): the mean loss of 20 batches of each split, train
and val; and, like nanoGPT, it saves a checkpoint (model and optimizer) when the val loss improved.

`python -m bench.nanogpt_reference TRAIN HELDOUT OUT [SEED] [ITERS] [LR]` trains and writes OUT/model.pt and
OUT/timing.json (LR: the peak learning rate, nanoGPT's 1e-3 by default).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

LAYERS, HEADS, WIDTH, BLOCK, BATCH, ITERS = 4, 4, 128, 64, 12, 2000
LR, MIN_LR, WARMUP, BETAS, DECAY, CLIP = 1e-3, 1e-4, 100, (0.9, 0.99), 0.1, 1.0
EVAL_EVERY, EVAL_BATCHES = 250, 20


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(WIDTH, bias=False), nn.LayerNorm(WIDTH, bias=False)
        self.qkv, self.out = nn.Linear(WIDTH, 3 * WIDTH, bias=False), nn.Linear(WIDTH, WIDTH, bias=False)
        self.up, self.down = nn.Linear(WIDTH, 4 * WIDTH, bias=False), nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (h.view(b, t, HEADS, -1).transpose(1, 2) for h in self.qkv(self.ln1(x)).split(WIDTH, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(b, t, WIDTH))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class BabyGPT(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, WIDTH), nn.Embedding(BLOCK, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f, self.head = nn.LayerNorm(WIDTH, bias=False), nn.Linear(WIDTH, vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def batch(data: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - BLOCK, (BATCH,), generator=generator)
    x = torch.stack([data[i : i + BLOCK] for i in starts])
    return x, torch.stack([data[i + 1 : i + 1 + BLOCK] for i in starts])


def lr_at(it: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (ITERS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main(
    train_file: str, heldout_file: str, out: str, seed: str = "1337", iters: str = str(ITERS), lr: str = str(LR)
) -> None:
    global ITERS, LR, MIN_LR
    ITERS, LR = int(iters), float(lr)
    MIN_LR = LR / 10  # nanoGPT's 1e-4 for its 1e-3 (its config: "min_lr ~= learning_rate/10 per Chinchilla")
    torch.manual_seed(int(seed))
    torch.set_num_threads(2)
    text = Path(train_file).read_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    train = torch.tensor([index[c] for c in text], dtype=torch.long)
    val = torch.tensor([index.get(c, 0) for c in Path(heldout_file).read_text()], dtype=torch.long)
    model = BabyGPT(len(chars))
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": DECAY}, {"params": others, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, fused=True)
    generator = torch.Generator().manual_seed(int(seed))
    first_step, best_val = None, math.inf
    for it in range(ITERS):
        if it % EVAL_EVERY == 0 or it == ITERS - 1:
            model.eval()
            with torch.no_grad():
                losses = {
                    name: torch.stack(
                        [
                            F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                            for x, y in (batch(split, generator) for _ in range(EVAL_BATCHES))
                        ]
                    ).mean()
                    for name, split in (("train", train), ("val", val))
                }
            model.train()
            if losses["val"] < best_val and it > 0:
                Path(out).mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, Path(out) / "ckpt.pt")
            best_val = min(best_val, float(losses["val"]))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it)
        x, y = batch(train, generator)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        if first_step is None:
            first_step = time.perf_counter() - T0
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "chars": chars}, Path(out) / "model.pt")
    timing = {
        "first_step_s": first_step,
        "wall_s": time.perf_counter() - T0,
        "val_loss": float(losses["val"]),
    }
    (Path(out) / "timing.json").write_text(json.dumps(timing))


if __name__ == "__main__":
    main(*sys.argv[1:7])
