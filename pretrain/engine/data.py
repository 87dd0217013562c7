"""The pretraining data loader, reproducible per sample so a resumed run sees the same crops."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.datasets import collate_skip_bad


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, stable across processes and runs."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededAugmentation(Dataset):
    """Runs each sample's random transform under a seed of (seed, epoch, index).

    With seeds tied to the sample rather than to a worker's RNG stream, the crops of a batch do
    not depend on the number of workers or on where a run was resumed.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


class ResumableSampler(Sampler[int]):
    """An epoch's shuffled indices for this rank (``DistributedSampler``), from a given offset."""

    def __init__(self, sampler: DistributedSampler, start: int = 0) -> None:
        self.sampler = sampler
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(self.sampler)
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return len(self.sampler) - self.start


def build_train_loader(
    dataset: SeededAugmentation,
    batch_size: int,
    num_workers: int,
    epoch: int,
    start_batch: int,
    seed: int,
    rank: int,
    world_size: int,
) -> DataLoader:
    """Loader for one epoch from batch ``start_batch``: full batches only (MoCo drops the last)."""
    dataset.epoch = epoch
    base = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    base.set_epoch(epoch)
    # A private generator: the loader must not draw from the global RNG, which the model's
    # shuffle BN uses and the checkpoint restores.
    generator = torch.Generator().manual_seed(seed * 1000003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableSampler(base, start_batch * batch_size),
        num_workers=num_workers,
        collate_fn=collate_skip_bad,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        generator=generator,
        persistent_workers=False,
    )
