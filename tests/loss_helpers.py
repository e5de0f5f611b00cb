"""Shared tiny inputs for the loss tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch

IGNORE = 2


def sheet_labels(shape=(5, 8, 9), seed=0, ignore_fraction=0.25) -> np.ndarray:
    """One sample's labels: two wavy sheets crossing every z-slice, random ignore voxels in a block."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.int16)
    for k, c0 in enumerate((2, 5)):
        c = c0 + np.sin(x / 2.5 + k + seed) * 0.8 + 0.1 * z
        lab[np.abs(y - c) < 1.0] = 1
    block = np.zeros(shape, bool)
    block[:, :, shape[2] // 2 :] = True
    lab[block & (rng.random(shape) < 2 * ignore_fraction)] = IGNORE
    return lab


def make_batch(shape=(5, 8, 9), seeds=(0, 1), dtype=torch.float32, scale=2.0):
    """(logits (B, 2, ...), labels (B, 1, ...) int16) with random logits."""
    labels = torch.from_numpy(np.stack([sheet_labels(shape, s) for s in seeds]))[:, None]
    g = torch.Generator().manual_seed(sum(seeds) + 7)
    logits = (torch.randn((len(seeds), 2, *shape), generator=g) * scale).to(dtype)
    return logits, labels


def perfect_logits(labels: torch.Tensor, margin: float = 15.0, dtype=torch.float32) -> torch.Tensor:
    """Confident logits matching the labels (random at ignore voxels)."""
    fg = (labels == 1).to(dtype) * 2 - 1
    logits = torch.cat([-margin * fg, margin * fg], dim=1)
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(3), dtype=dtype) * 5
    return torch.where(labels == IGNORE, noise, logits)
