"""The key/value cache generation uses: each attention layer keeps the keys and values it has computed, so a
new token costs one position of work instead of the whole sequence again. Cross-attention keys and values (an
encoder-decoder's memory) are computed once."""

from __future__ import annotations

import torch


class LayerCache:
    """One attention layer's keys and values (batch, kv_heads, time, head_dim)."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys/values along time; return everything cached."""
        if self.keys is not None:
            keys, values = torch.cat((self.keys, keys), dim=2), torch.cat((self.values, values), dim=2)
        self.keys, self.values = keys, values
        return keys, values


class KVCache:
    """Every layer's cache for one generation, the padding mask over the cached positions, and their count."""

    def __init__(self) -> None:
        self.self_attention: dict[int, LayerCache] = {}
        self.cross_attention: dict[int, LayerCache] = {}
        self.mask: torch.Tensor | None = None  # (batch, cached positions); 1 = real token
        self.length = 0  # positions cached (a prompt-tuning prefix included)

    def layer(self, index: int, cross: bool = False) -> LayerCache:
        slots = self.cross_attention if cross else self.self_attention
        return slots.setdefault(index, LayerCache())

    def extend_mask(
        self, new: torch.Tensor | None, batch: int, steps: int, device: torch.device
    ) -> torch.Tensor | None:
        """The padding mask over all keys once `steps` new positions are added (None while nothing is padded)."""
        if new is None and self.mask is None:
            return None
        if new is None:
            new = torch.ones(batch, steps, dtype=torch.long, device=device)
        if self.mask is None and self.length:
            self.mask = torch.ones(batch, self.length, dtype=torch.long, device=device)
        self.mask = new if self.mask is None else torch.cat((self.mask, new.to(self.mask.dtype)), dim=1)
        return self.mask
