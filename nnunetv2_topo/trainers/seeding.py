"""The ``seed`` key: one seeding rule for every trainer of the package, so that runs with the same seed are paired
(the same initial weights where the networks match, the same patch and augmentation draws)."""

from __future__ import annotations

import random

import numpy as np
import torch

EPOCH_STREAM_STRIDE = 100_003
"""Offset between DDP ranks' data streams (prime, so ranks never share a stream for realistic epoch counts)."""


def seed_everything(seed: int | None, offset: int = 0) -> None:
    """Seed python, numpy and torch with ``seed + offset``; no-op when ``seed`` is None."""
    if seed is None:
        return
    value = int(seed) + offset
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def seed_weights(seed: int | None) -> None:
    """Before the network is built (``initialize``): the weight initialisation."""
    seed_everything(seed)


def seed_data(seed: int | None, epoch: int, rank: int) -> None:
    """At ``on_train_start``: patch sampling and augmentation (nnU-Net's data loader draws from numpy's global
    generator); a resumed run does not replay epoch 0's batches, and DDP ranks draw different patches."""
    seed_everything(seed, 1 + epoch + EPOCH_STREAM_STRIDE * rank)
