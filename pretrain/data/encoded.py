"""Undecoded images for the GPU data path: file bytes from the loader workers, decoded in batches.

Workers only read files. Plain 8-bit three-channel JPEGs (what ImageNet is made of) travel as
bytes and are decoded together on the training device by ``torchvision.io.decode_jpeg``;
everything else (PNG and other formats, grey or CMYK JPEGs, 12-bit JPEGs, in-memory datasets)
is decoded by PIL in the worker, as the CPU path does, and travels as a uint8 tensor. A file
that neither decoder can read is skipped and counted, never fatal.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from .datasets import ImageListDataset, Unreadable, load_rgb

logger = logging.getLogger("unimoco.data")

# Start-of-frame markers of JPEGs the batched decoder takes: baseline, extended, progressive.
_BATCH_SOF = (0xC0, 0xC1, 0xC2)
# Other start-of-frame markers (lossless, arithmetic coding, ...): left to PIL.
_OTHER_SOF = tuple(m for m in range(0xC3, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
_STANDALONE = (0x01, *range(0xD0, 0xD9))
_START_OF_SCAN = 0xDA


class EncodedItem(NamedTuple):
    """One image: ``payload`` is JPEG bytes when ``encoded``, else decoded uint8 (3, H, W) RGB."""

    payload: torch.Tensor
    encoded: bool
    target: int
    index: int


class EncodedBatch(NamedTuple):
    """A collated batch of ``EncodedItem``; the unreadable items were left out and ``bad``
    names them.

    The JPEG bytes of the batch travel back to back in one tensor (``jpeg_bytes``, cut by
    ``jpeg_lengths``): a DataLoader worker hands each tensor over through its own shared-memory
    segment, and one per image held 2 workers on 2 cores to 2,600-3,400 images/s against
    23,500-24,400 packed (docs/benchmarks.md). The few images decoded by PIL stay a list.
    """

    jpeg_bytes: torch.Tensor
    jpeg_lengths: torch.Tensor
    decoded: list[torch.Tensor]
    encoded: list[bool]
    targets: torch.Tensor
    indices: torch.Tensor
    bad: list[str]

    @property
    def payloads(self) -> list[torch.Tensor]:
        """Each item's payload in batch order: JPEG bytes (views into ``jpeg_bytes``) or the
        decoded uint8 (3, H, W) image."""
        jpegs = iter(torch.split(self.jpeg_bytes, self.jpeg_lengths.tolist()))
        decoded = iter(self.decoded)
        return [next(jpegs) if encoded else next(decoded) for encoded in self.encoded]


def batch_decodable(data: bytes) -> bool:
    """True for an 8-bit, three-component, Huffman-coded JPEG (read from its frame header)."""
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in _BATCH_SOF:
            return pos + 10 <= len(data) and data[pos + 4] == 8 and data[pos + 9] == 3
        if marker in _OTHER_SOF or marker == _START_OF_SCAN:
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 (3, H, W) of a PIL image, converted to RGB."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class EncodedImages(Dataset):
    """A dataset's images as ``EncodedItem`` (``None`` when unreadable); targets pass through."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, index: int) -> str:
        """The file of item ``index`` (or its index in an in-memory dataset), for warnings."""
        if isinstance(self.dataset, ImageListDataset):
            return str(self.dataset.root / self.dataset.samples[index][0])
        return f"item {index}"

    def __getitem__(self, index: int) -> EncodedItem | Unreadable:
        if not isinstance(self.dataset, ImageListDataset):
            item = self.dataset[index]  # in-memory images: PIL, no transform
            if isinstance(item, Unreadable):
                return item
            image, target = item
            return EncodedItem(pil_to_tensor(image), False, target, index)
        target = self.dataset.targets[index]
        try:
            with open(self.describe(index), "rb") as file:
                data = file.read()
            if batch_decodable(data):
                return EncodedItem(
                    torch.frombuffer(bytearray(data), dtype=torch.uint8), True, target, index
                )
            return EncodedItem(pil_to_tensor(load_rgb(io.BytesIO(data))), False, target, index)
        except Exception as err:  # unreadable or undecodable: PIL raises many kinds of error
            logger.warning(
                "cannot decode %s (%s: %s); skipping it",
                self.describe(index),
                type(err).__name__,
                err,
            )
            return Unreadable(self.describe(index))


def collate_encoded(items: Sequence[EncodedItem | Unreadable]) -> EncodedBatch:
    """The JPEG payloads packed into one tensor, decoded images listed, int64 targets and
    indices, the unreadable items named."""
    good = [item for item in items if isinstance(item, EncodedItem)]
    jpegs = [item.payload for item in good if item.encoded]
    return EncodedBatch(
        jpeg_bytes=torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
        jpeg_lengths=torch.tensor([len(payload) for payload in jpegs], dtype=torch.int64),
        decoded=[item.payload for item in good if not item.encoded],
        encoded=[item.encoded for item in good],
        targets=torch.tensor([item.target for item in good], dtype=torch.int64),
        indices=torch.tensor([item.index for item in good], dtype=torch.int64),
        bad=[item.name for item in items if isinstance(item, Unreadable)],
    )


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One JPEG on ``device``, else through PIL on the CPU; ``None`` if neither can read it."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        return pil_to_tensor(load_rgb(io.BytesIO(data.numpy().tobytes()))).to(device)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        return None


def decode_batch(
    batch: EncodedBatch, device: torch.device, describe: Callable[[int], str] | None = None
) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """uint8 (3, H, W) RGB images on ``device``, the positions in the batch they come from, and
    the names of the JPEGs that nobody could decode.

    The JPEGs are decoded in one ``decode_jpeg`` call; if it fails (a corrupt file), each is
    retried alone and then by PIL, and the ones nobody can read are left out with a warning.
    """
    if device.type == "cuda":
        # torchvision's CUDA decoder allocates its outputs on the current stream but writes them
        # from its own stream without waiting for this one, so a block freed here while queued
        # kernels still read it could be overwritten (pytorch/vision#9606). With the current
        # stream drained first, no block it hands out has a pending reader. Only the prefetch
        # thread waits, for its own previous batch.
        torch.cuda.current_stream(device).synchronize()
    payloads = batch.payloads
    images: list[torch.Tensor | None] = [
        None if encoded else payload.to(device, non_blocking=True)
        for payload, encoded in zip(payloads, batch.encoded)
    ]
    jpegs = [i for i, encoded in enumerate(batch.encoded) if encoded]
    failed = []
    if jpegs:
        data = [payloads[i] for i in jpegs]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(item, device) for item in data]
        for i, image in zip(jpegs, decoded):
            images[i] = image
            if image is None:
                index = int(batch.indices[i])
                failed.append(describe(index) if describe else f"item {index}")
                logger.warning("cannot decode %s (corrupt JPEG data); skipping it", failed[-1])
    keep = [i for i, image in enumerate(images) if image is not None]
    return [images[i] for i in keep], torch.tensor(keep, dtype=torch.int64), failed
