"""Data-parallel training over torch.distributed: which process this is, the share of each global batch it trains
on, and the few collectives the train core needs.

Every piece works without a process group too (one process is rank 0 of 1 and the collectives are identities), so
one process and N processes run the same code. N processes train the model one process trains, up to the order of
floating-point sums, because:

- the global batch stays ``batch_size``: every epoch one seeded permutation of the train images, the same for every
  number of processes, is cut into global batches, and rank r takes the r-th of N equal slices of each
  (``ShardedBatches``);
- an image's augmentation is seeded from (seed, epoch, image index) (``SeededRows``), not from a worker's or a
  rank's random state;
- dropout draws the mask of the whole global batch from a generator of its own on every rank and applies the rank's
  rows of it (``ShardedDropout``);
- DistributedDataParallel averages the ranks' gradients: each rank's loss is its slice's share of the global
  batch's mean loss (the train core divides the attribution term by the global batch's count of named images);
- at validation each rank scores its share of the images and every rank gets all the scores (``gather_scores``),
  so all stop at the same epoch.

One exception: BatchNorm. On the CPU each rank normalises with its own slice's statistics (torch's SyncBatchNorm
runs on GPUs only: on a CPU tensor it raises "SyncBatchNorm expected input tensor to be on GPU"), and the running
statistics are averaged over the ranks before every validation (``average_buffers``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Sampler

from components.common.loaders import ImageRows
from components.common.seeding import seed_item

Item = TypeVar("Item")
Key = tuple[int, int]  # (epoch, image index): what ShardedBatches yields and SeededRows reads


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank ``rank`` of ``size`` (one process: 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0, the one process that logs to MLflow and writes the checkpoint."""
        return self.rank == 0


ONE_PROCESS = World()  # a process training alone


def current_world() -> World:
    """The process group's rank and size when torch.distributed is initialised, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return ONE_PROCESS


def expect_world(size: int) -> World:
    """``current_world()``, which must have ``size`` processes."""
    world = current_world()
    if world.size != size:
        raise ValueError(
            f"training on {size} processes, but this is one of {world.size}: start them with torchrun (or the "
            "train step's run_training, components.train_ranks)"
        )
    return world


@contextmanager
def process_group() -> Iterator[World]:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) over gloo, and leave it on exit. Gloo, not NCCL: the train core computes on the CPU, and NCCL
    reduces CUDA tensors only."""
    dist.init_process_group(backend="gloo")
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


class ShardedBatches(Sampler[list[Key]]):
    """This rank's slice of every global batch of ``batch_size`` items, as (epoch, index) keys.

    Each pass over it is the next epoch: a permutation of the items seeded from (seed, epoch), the same for every
    world size, cut into global batches (an incomplete last one is dropped); rank r of N takes the r-th of N equal
    slices of each.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, world: World) -> None:
        if batch_size % world.size:
            raise ValueError(
                f"batch_size {batch_size} does not split evenly over {world.size} training processes: "
                f"pass a multiple of {world.size}"
            )
        self.num_items, self.batch_size, self.seed, self.world = num_items, batch_size, seed, world
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_items // self.batch_size

    def __iter__(self) -> Iterator[list[Key]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        share = self.batch_size // self.world.size
        for start in range(self.world.rank * share, len(self) * self.batch_size, self.batch_size):
            yield [(epoch, int(index)) for index in order[start : start + share]]


class SeededRows(Dataset[Item]):
    """``rows`` read by (epoch, index) keys: Python's and numpy's random state are seeded from (seed, epoch, index)
    before each item is made from its image, so an image's augmentation is the same whichever rank, DataLoader
    worker or position in a batch reads it. A batch's images are read together, as ``ImageRows`` reads them."""

    def __init__(self, rows: ImageRows[Item], seed: int) -> None:
        self.rows, self.seed = rows, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> Item:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[Key]) -> list[Item]:
        data = self.rows.images.read_batch([self.rows.refs[index] for _, index in keys])
        items = []
        for (epoch, index), image in zip(keys, data, strict=True):
            seed_item(self.seed, epoch, index)
            items.append(self.rows.item(index, image))
        return items


class ShardedDropout(nn.Dropout):
    """Dropout whose mask is this rank's rows of a mask drawn for the whole global batch from a generator of its
    own, seeded alike on every rank: any number of processes drop the same units of the same images."""

    def __init__(self, p: float, world: World, seed: int) -> None:
        super().__init__(p)
        self.world = world
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return inputs
        rows, rank = len(inputs), self.world.rank
        keep = inputs.new_empty((rows * self.world.size, *inputs.shape[1:]))
        keep.bernoulli_(1 - self.p, generator=self.generator)
        return inputs * keep[rank * rows : (rank + 1) * rows] / (1 - self.p)


def shard_dropout(model: nn.Module, world: World, seed: int) -> None:
    """Replace every ``nn.Dropout`` of ``model`` with a ``ShardedDropout`` of the same rate (the state dict does
    not change: dropout holds no state)."""
    dropouts = [(name, module) for name, module in model.named_modules() if type(module) is nn.Dropout]
    for offset, (name, module) in enumerate(dropouts):
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, ShardedDropout(module.p, world, seed + offset))


def data_parallel(module: nn.Module, world: World, find_unused: bool) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when there are several ranks (``module`` itself for one): its
    parameters and buffers start as rank 0's, the ranks' gradients are averaged at every backward pass, and buffers
    (BatchNorm's running statistics) stay each rank's own until ``average_buffers``. ``find_unused``: some steps
    leave parameters out of the loss (a frozen backbone, a batch with no attribution target)."""
    if world.size == 1:
        return module
    return DistributedDataParallel(module, find_unused_parameters=find_unused, forward_sync_buffers=False)


def all_sum(values: list[float], world: World) -> list[float]:
    """Each value summed over the ranks."""
    if world.size == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def average_buffers(model: nn.Module, world: World) -> None:
    """Average the floating-point buffers of ``model`` (BatchNorm's running statistics) over the ranks."""
    if world.size == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world.size)


def shard_rows(rows: pd.DataFrame, world: World) -> pd.DataFrame:
    """This rank's share of ``rows`` (every size-th row from its rank on): what it scores at validation."""
    return rows.iloc[world.rank :: world.size]


def gather_scores(
    logits: np.ndarray, labels: np.ndarray, loss: float, world: World
) -> tuple[np.ndarray, np.ndarray, float]:
    """The ranks' validation scores of their shards (``predict_logits``'s logits, labels and mean loss) joined on
    every rank: all logits, all labels, the mean loss over all images. Every rank then computes the same metrics and
    takes the same early-stopping decision."""
    if world.size == 1:
        return logits, labels, loss
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, (logits, labels, loss))
    counts = [len(part_labels) for _, part_labels, _ in parts]
    mean_loss = sum(part_loss * count for (_, _, part_loss), count in zip(parts, counts, strict=True)) / sum(counts)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), float(mean_loss)
