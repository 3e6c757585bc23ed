"""The one seeding function: python, numpy, torch, deterministic algorithms, DataLoader workers."""

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
