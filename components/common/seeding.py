"""The one seeding function: python, numpy, torch, deterministic algorithms, DataLoader workers; and the seed of each
training item's augmentation."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every random source and turn on deterministic algorithms; returns a seeded torch Generator
    for DataLoader shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # cuBLAS needs this workspace setting for deterministic results on a GPU; harmless on a CPU.
    # Written, not read: cuBLAS takes this from the process environment.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # noqa: TID251
    torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: derive each worker's python and numpy seeds from torch's."""
    worker_seed = (torch.initial_seed() + worker_id) % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def seed_item(seed: int, epoch: int, index: int) -> None:
    """Seed python's and numpy's global random state for reading one training item (its augmentation) from
    (seed, epoch, item index) alone: not from the process, the DataLoader worker or the order items are read in."""
    python_seed, numpy_seed = np.random.SeedSequence([seed, epoch, index]).generate_state(2)
    random.seed(int(python_seed))
    np.random.seed(int(numpy_seed))
