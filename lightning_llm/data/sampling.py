"""What a training epoch reads: packed windows on a fixed grid or at random offsets, shuffled by a sampler
that can rebuild any epoch's order after a crash and skip what a resumed epoch already trained on."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def fixed_batches(
    examples, collate, batch_size: int, seed: int, batches: list[list[int]] | None = None
) -> list[dict[str, torch.Tensor]]:
    """Collate `examples` once under a fixed seed: random masks or spans are then the same at every
    evaluation, so validation losses compare across steps and runs. `batches`: the rows of each batch (default:
    `batch_size` consecutive rows)."""
    if batches is None:
        batches = [
            list(range(start, min(start + batch_size, len(examples)))) for start in range(0, len(examples), batch_size)
        ]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [collate([examples[i] for i in rows]) for rows in batches]


def pack_by_tokens(
    order: np.ndarray, lengths: np.ndarray, max_tokens: int, max_rows: int, copies: int = 1
) -> list[list[int]]:
    """Consecutive rows of `order` into batches of at most `max_rows` rows whose padded size (rows x `copies` x
    the longest row) stays within `max_tokens`; a row longer than that alone makes a batch."""
    batches: list[list[int]] = []
    rows: list[int] = []
    longest = 0
    for i in order.tolist():
        wider = max(longest, int(lengths[i]))
        if rows and (len(rows) >= max_rows or (len(rows) + 1) * copies * wider > max_tokens):
            batches.append(rows)
            rows, wider = [], int(lengths[i])
        rows.append(i)
        longest = wider
    return [*batches, rows] if rows else batches


def sorted_token_batches(
    lengths: np.ndarray, max_tokens: int, max_rows: int, seed: int, copies: int = 1
) -> list[list[int]]:
    """Validation batches bounded by tokens: rows sorted by length (little padding), the batches in a seeded random
    order, so that the first few (a bounded validation) are not only the shortest rows."""
    batches = pack_by_tokens(np.argsort(lengths, kind="stable"), lengths, max_tokens, max_rows, copies)
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()
    return [batches[i] for i in order]


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

    def resume_after(self, batches: int, batch_size: int) -> None:
        """Skip what a resumed epoch's first `batches` batches of `batch_size` rows trained on."""
        self.skip = batches * batch_size


#: Rows are sorted by length within windows of this many batches' rows: batches of similar lengths (little
#: padding) while an epoch's order stays random
BUCKET_BATCHES = 50


class TokenBudgetSampler(ResumableSampler):
    """Batches bounded by tokens (`data.max_tokens`): up to `max_rows` rows, fewer where their padded size (rows x
    `copies` x the longest) would pass `max_tokens`, so memory follows the data rather than the longest row. An
    epoch shuffles the rows (seeded by seed and epoch), sorts windows of BUCKET_BATCHES batches' rows by length,
    packs them and shuffles the batches; under DDP each process takes every r-th batch (as many each). Yields a
    batch's row indices (for `RowBatches`); being a DistributedSampler, Lightning keeps it, and a resumed epoch
    skips the batches it trained."""

    def __init__(self, lengths: np.ndarray, max_tokens: int, max_rows: int, seed: int, copies: int = 1) -> None:
        super().__init__(len(lengths), seed)
        self.lengths, self.max_tokens, self.max_rows, self.copies = np.asarray(lengths), max_tokens, max_rows, copies
        self._planned: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of this epoch, all processes together (rebuilt identically from seed and epoch)."""
        if self._planned is None or self._planned[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_examples, generator=generator).numpy()
            window = self.max_rows * BUCKET_BATCHES
            batches = []
            for start in range(0, len(order), window):
                part = order[start : start + window]
                part = part[np.argsort(self.lengths[part], kind="stable")]
                batches += pack_by_tokens(part, self.lengths, self.max_tokens, self.max_rows, self.copies)
            shuffled = torch.randperm(len(batches), generator=generator).tolist()
            self._planned = (self.epoch, [batches[i] for i in shuffled])
        return self._planned[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        share = len(batches) // self.num_replicas
        mine = batches[: share * self.num_replicas][self.rank :: self.num_replicas][self.skip :]
        self.skip = 0
        return iter(mine)

    def __len__(self) -> int:
        return len(self.epoch_batches()) // self.num_replicas

    def resume_after(self, batches: int, batch_size: int) -> None:
        self.skip = batches


class RowBatches(Dataset):
    """A dataset of rows read a batch at a time: index = a list of row indices (what TokenBudgetSampler yields)."""

    def __init__(self, rows: Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: list[int]) -> list:
        return [self.rows[i] for i in indices]


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
    if sampler is None:
        sampler = ResumableSampler(len(dataset), torch.initial_seed() % 2**31)
    trainer = datamodule.trainer
    if trainer is not None:
        sampler.distribute(trainer.world_size, trainer.global_rank)
        sampler.set_epoch(trainer.current_epoch)
        # batches whose optimizer step was taken (a checkpoint written by an interrupt at the end of a batch has
        # it processed but not yet completed: counting completed ones trained that batch twice)
        sampler.resume_after(trainer.fit_loop.epoch_loop.batch_progress.current.processed, datamodule.batch_size)
    if isinstance(sampler, TokenBudgetSampler):  # the sampler makes the batches
        return DataLoader(
            RowBatches(dataset),
            batch_size=None,
            sampler=sampler,
            collate_fn=collate,
            num_workers=datamodule.num_workers,
        )
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
