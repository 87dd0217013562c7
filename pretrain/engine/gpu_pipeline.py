"""The GPU data path: batches of file bytes -> decoded on the device -> two augmented crops.

Batches are prepared ahead in a background thread, on a CUDA stream of their own, so decoding
and augmentation overlap the model step; on the CPU the same code runs in line (or threaded, for
tests). Each batch's augmentation parameters come from a generator seeded by (seed, epoch,
batch, rank), so a resumed run sees the same crops.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import torch

from ..data.augment_params import AugmentSpec
from ..data.encoded import EncodedBatch, decode_batch
from ..data.gpu_augment import two_crops

Batch = tuple[list[torch.Tensor], torch.Tensor, list[str]]
_DONE = object()


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A 63-bit seed for one batch's augmentation parameters, stable across runs."""
    digest = hashlib.blake2b(f"gpu/{seed}/{epoch}/{batch}/{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class GpuAugmentedBatches:
    """``([query views, key views], targets, bad names)`` per batch of ``EncodedBatch``, with the
    views on ``device``: the trainer's loader contract, as the CPU path's collate gives it.

    ``dtype`` and ``memory_format`` set the views' layout: under bf16 autocast the first
    convolution rounds its input to bf16 anyway, so bf16 views give it the same values at half
    the memory of every prefetched batch, and the step's channels_last copy happens here, on
    the side stream."""

    def __init__(
        self,
        loader: Iterable[EncodedBatch],
        spec: AugmentSpec,
        device: torch.device,
        seed: int,
        epoch: int,
        start_batch: int,
        rank: int,
        prefetch: int,
        describe: Callable[[int], str] | None = None,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.loader = loader
        self.spec = spec
        self.device = device
        self.seeds = (seed, epoch, start_batch, rank)
        self.prefetch = prefetch
        self.describe = describe
        self.layout = {"dtype": dtype, "memory_format": memory_format}

    def __len__(self) -> int:
        return len(self.loader)

    def prepare(self, batch: EncodedBatch, number: int) -> Batch:
        """Decode one batch and draw its two crops; undecodable images join the bad names."""
        seed, epoch, start, rank = self.seeds
        images, keep, failed = decode_batch(batch, self.device, self.describe)
        bad = batch.bad + failed
        if not images:
            return [torch.empty(0), torch.empty(0)], torch.empty(0, dtype=torch.int64), bad
        gen = torch.Generator().manual_seed(batch_seed(seed, epoch, start + number, rank))
        views = [view.to(**self.layout) for view in two_crops(images, self.spec, gen)]
        return views, batch.targets[keep], bad

    def __iter__(self) -> Iterator[Batch]:
        if self.prefetch <= 0:
            for number, batch in enumerate(self.loader):
                yield self.prepare(batch, number)
            return
        yield from self._prefetched()

    def _prefetched(self) -> Iterator[Batch]:
        """Batches made by a worker thread up to ``prefetch`` ahead (on a side CUDA stream)."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        cuda = self.device.type == "cuda"

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                if cuda:
                    torch.cuda.set_device(self.device)
                stream = torch.cuda.Stream(self.device) if cuda else None
                for number, batch in enumerate(self.loader):
                    with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                        prepared = self.prepare(batch, number)
                        event = torch.cuda.Event() if cuda else None
                        if event is not None:
                            event.record(stream)
                    if not put((prepared, event)):
                        return
                put(_DONE)
            except BaseException as err:  # handed to the consumer, which re-raises it
                put(err)

        thread = threading.Thread(target=work, name="gpu-data", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                (views, targets, bad), event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for view in views:
                        view.record_stream(current)
                yield views, targets, bad
        finally:
            stop.set()
            thread.join()
