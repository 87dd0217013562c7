"""The pretraining data loader, reproducible per sample so a resumed run sees the same crops.

``DATA.PIPELINE`` picks how images become crops: ``cpu`` (PIL transforms in the workers) or
``gpu`` (workers read bytes; decoding and augmentation on the training device).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.augment_params import augment_spec
from ..data.datasets import collate_skip_bad
from ..data.encoded import EncodedImages, collate_encoded
from ..data.transforms import TwoCropsTransform, build_pretrain_transform
from .gpu_pipeline import GpuAugmentedBatches
from .preemption import ignore_stop_signals

# Batches the GPU path prepares ahead of the step on CUDA.
GPU_PREFETCH = 2


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
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    epoch: int,
    start_batch: int,
    seed: int,
    rank: int,
    world_size: int,
    collate_fn: Callable = collate_skip_bad,
) -> DataLoader:
    """Loader for one epoch from batch ``start_batch``: full batches only (MoCo drops the last)."""
    if isinstance(dataset, SeededAugmentation):
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
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        generator=generator,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals,
    )


def train_transform(cfg: CfgNode) -> TwoCropsTransform | None:
    """The dataset's own transform: the two PIL crops on the CPU path, none on the GPU path."""
    return build_pretrain_transform(cfg) if cfg.DATA.PIPELINE == "cpu" else None


def wrap_train_dataset(cfg: CfgNode, dataset: Dataset) -> Dataset:
    """Per-sample seeded crops (CPU path) or undecoded images (GPU path)."""
    if cfg.DATA.PIPELINE == "cpu":
        return SeededAugmentation(dataset, cfg.SEED)
    return EncodedImages(dataset)


def view_layout(cfg: CfgNode, device: torch.device) -> dict:
    """``Tensor.to`` keywords (dtype, memory_format) of the views the data path hands to the
    step: the GPU path makes them bf16 under AMP on CUDA and channels_last with
    MODEL.CHANNELS_LAST; the CPU path's collate gives float32 in the default layout (the step
    converts it)."""
    if cfg.DATA.PIPELINE != "gpu":
        return {"dtype": torch.float32, "memory_format": torch.contiguous_format}
    amp = device.type == "cuda" and cfg.SOLVER.AMP
    channels_last = cfg.MODEL.CHANNELS_LAST
    return {
        "dtype": torch.bfloat16 if amp else torch.float32,
        "memory_format": torch.channels_last if channels_last else torch.contiguous_format,
    }


def build_epoch_batches(
    cfg: CfgNode,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    epoch: int,
    start_batch: int,
    rank: int,
    world_size: int,
) -> Iterable[tuple[list[torch.Tensor], torch.Tensor, list[str]]]:
    """``([query, key], targets, bad names)`` batches of one epoch from ``start_batch``, by the
    pipeline ``DATA.PIPELINE`` names (``dataset`` from ``wrap_train_dataset``)."""
    gpu = cfg.DATA.PIPELINE == "gpu"
    workers, collate = cfg.DATA.NUM_WORKERS, collate_encoded if gpu else collate_skip_bad
    loader = build_train_loader(
        dataset, batch_size, workers, epoch, start_batch, cfg.SEED, rank, world_size, collate
    )
    if not gpu:
        return loader
    return GpuAugmentedBatches(
        loader,
        augment_spec(cfg),
        device,
        cfg.SEED,
        epoch,
        start_batch,
        rank,
        GPU_PREFETCH if device.type == "cuda" else 0,
        dataset.describe,
        **view_layout(cfg, device),
    )
