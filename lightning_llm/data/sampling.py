"""What a training epoch reads: packed windows on a fixed grid or at random offsets, shuffled by a sampler
that can rebuild any epoch's order after a crash and skip what a resumed epoch already trained on."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def fixed_batches(examples, collate, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Collate `examples` once under a fixed seed: random masks or spans are then the same at every
    evaluation, so validation losses compare across steps and runs."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [
            collate([examples[i] for i in range(start, min(start + batch_size, len(examples)))])
            for start in range(0, len(examples), batch_size)
        ]


class ResumableSampler(DistributedSampler):
    """Orders an epoch with a generator seeded by (seed, epoch), so any epoch's order can be rebuilt after a crash;
    `skip` drops the examples a resumed epoch already trained on (Lightning calls `set_epoch`). Under DDP it deals
    the order out itself (`num_replicas`, `rank`: process r takes every r-th example of the epoch's order), so a
    resumed epoch skips each process's own trained share; being a DistributedSampler, Lightning keeps it instead of
    wrapping it in one that cannot skip (resuming a DDP run failed with an IndexError)."""

    def __init__(self, num_examples: int, seed: int) -> None:
        super().__init__(range(num_examples), num_replicas=1, rank=0, shuffle=False, drop_last=True)
        self.num_examples, self.seed, self.skip = num_examples, seed, 0

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """The whole epoch's order, all processes together: a permutation of the examples."""
        return torch.randperm(self.num_examples, generator=generator)

    def distribute(self, num_replicas: int, rank: int) -> None:
        """This process's place among `num_replicas` processes."""
        self.num_replicas, self.rank = num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        order = self.epoch_order(torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        share = len(order) // self.num_replicas
        mine = order[: share * self.num_replicas][self.rank :: self.num_replicas][self.skip :].tolist()
        self.skip = 0
        return iter(mine)

    def __len__(self) -> int:
        return self.num_examples // self.num_replicas


class RandomWindowSampler(ResumableSampler):
    """nanoGPT's sampling: each example is a window starting at a uniformly random token (any offset, not a
    fixed grid), `num_examples` per epoch; yields start positions for `WindowsAt`. Seeded by (seed, epoch), so a
    resumed epoch rebuilds the same starts and skips the trained ones."""

    def __init__(self, num_tokens: int, length: int, num_examples: int, seed: int) -> None:
        super().__init__(num_examples, seed)
        self.num_starts = max(1, num_tokens - length + 1)

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.num_starts, (self.num_examples,), generator=generator)


def train_loader(
    datamodule: pl.LightningDataModule, dataset: Dataset, collate, sampler: ResumableSampler | None = None
) -> DataLoader:
    """The shuffled training loader; on a resumed fit it continues the interrupted epoch where it stopped."""
    sampler = sampler or ResumableSampler(len(dataset), torch.initial_seed() % 2**31)
    trainer = datamodule.trainer
    if trainer is not None:
        sampler.distribute(trainer.world_size, trainer.global_rank)
        sampler.set_epoch(trainer.current_epoch)
        # batches whose optimizer step was taken (a checkpoint written by an interrupt at the end of a batch has
        # it processed but not yet completed: counting completed ones trained that batch twice)
        sampler.skip = trainer.fit_loop.epoch_loop.batch_progress.current.processed * datamodule.batch_size
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        num_workers=datamodule.num_workers,
    )


class PackedBlocks(Dataset):
    """Fixed-length windows over one token stream: window i is tokens[i*stride : i*stride + length]."""

    def __init__(self, tokens: torch.Tensor, length: int, stride: int) -> None:
        self.tokens, self.length, self.stride = tokens, length, stride
        self.num_blocks = max(0, (len(tokens) - length) // stride + 1)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.stride
        return self.tokens[start : start + self.length]


class WindowsAt(Dataset):
    """`length` tokens from any start position (the index is the start)."""

    def __init__(self, tokens: torch.Tensor, length: int) -> None:
        self.tokens, self.length = tokens, length

    def __len__(self) -> int:
        return max(0, len(self.tokens) - self.length + 1)

    def __getitem__(self, start: int) -> torch.Tensor:
        return self.tokens[start : start + self.length]


class DocumentRows(Dataset):
    """One document per example (`data.packing=pad`): documents end at `eos_id` in the token stream; one longer
    than `length` continues in further rows, `stride` apart (overlapping by length - stride, as packed windows
    do), so no token is lost. Only the row boundaries are stored (two int64 per row)."""

    def __init__(self, tokens: torch.Tensor, eos_id: int, length: int, stride: int) -> None:
        self.tokens = tokens
        ends = np.flatnonzero(tokens.numpy() == eos_id) + 1
        if len(ends) == 0 or ends[-1] != len(tokens):
            ends = np.append(ends, len(tokens))
        starts = np.concatenate(([0], ends[:-1]))
        overlap = length - stride
        rows = np.maximum(1, -(-(ends - starts - overlap) // stride))
        first_row = np.repeat(np.cumsum(rows) - rows, rows)
        self.starts = np.repeat(starts, rows) + (np.arange(rows.sum()) - first_row) * stride
        self.ends = np.minimum(self.starts + length, np.repeat(ends, rows))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tokens[int(self.starts[index]) : int(self.ends[index])]
