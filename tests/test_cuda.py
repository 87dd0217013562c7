"""What only a GPU can show: the CUDA JPEG decoder's stream hazard, the prefetch thread's side
stream, the step's host synchronisations and a compiled bf16 run. Skipped without CUDA; run on a
GPU machine with ``pytest tests/test_cuda.py`` (docs/benchmarks.md)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import cuda_only
from PIL import Image
from torch.utils.data import DataLoader

from unimoco.cli import main as cli_main
from unimoco.pretrain.data.augment_params import AugmentSpec
from unimoco.pretrain.data.datasets import ImageListDataset
from unimoco.pretrain.data.encoded import EncodedImages, EncodedItem, collate_encoded, decode_batch
from unimoco.pretrain.data.shapes import ensure_shapes_imagefolder
from unimoco.pretrain.engine.gpu_pipeline import GpuAugmentedBatches

pytestmark = cuda_only
CUDA = torch.device("cuda")


def _jpeg(seed: int, size: int = 256) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def test_decoding_never_overwrites_memory_that_queued_kernels_still_read():
    """Blocks freed on the current stream while kernels queued there still read them must not
    be handed to the decoder before those kernels ran (pytorch/vision#9606's failure)."""
    size, count = 256, 8
    batch = collate_encoded([EncodedItem(_jpeg(i, size), True, 0, i) for i in range(count)])
    numel = 3 * size * size // 4  # float32 blocks of one decoded image's bytes
    for _ in range(20):
        victims = [torch.full((numel,), 1.5, device=CUDA) for _ in range(count)]
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # keeps the stream busy while the host goes on
        sums = [victim.sum() for victim in victims]
        del victims
        images, keep, failed = decode_batch(batch, CUDA)
        torch.cuda.synchronize()
        assert len(images) == count and keep.tolist() == list(range(count)) and failed == []
        assert all(float(total) == 1.5 * numel for total in sums)


def test_prefetched_cuda_batches_equal_the_cpu_computation(tmp_path):
    """The prefetch thread's side stream hands over the same views the CPU computes from the
    same images and seeds (PNG, so both decode with PIL). The tolerance leaves room for the TF32
    that cuDNN may use in the blur's convolution."""
    root = ensure_shapes_imagefolder(tmp_path, "train", 40, 48, 0)
    dataset = EncodedImages(ImageListDataset.from_folder(root))
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate_encoded)
    spec = AugmentSpec(32)
    cpu = list(GpuAugmentedBatches(loader, spec, torch.device("cpu"), 0, 0, 0, 0, 0))
    cuda = list(GpuAugmentedBatches(loader, spec, CUDA, 0, 0, 0, 0, 2))
    assert len(cpu) == len(cuda) == 5
    for (cpu_views, cpu_targets, _), (cuda_views, cuda_targets, _) in zip(cpu, cuda):
        assert torch.equal(cpu_targets, cuda_targets)
        for a, b in zip(cpu_views, cuda_views):
            assert b.is_cuda
            difference = (b.cpu() - a).abs()
            assert difference.max() < 1e-2 and difference.mean() < 1e-3


BENCH = [
    "MODEL.ARCH", "resnet18", "INPUT.SIZE", "32", "SOLVER.BATCH_SIZE", "16", "MOCO.K", "64",
    "MOCO.BN_SPLITS", "2", "DATA.NUM_WORKERS", "2", "DATA.LABEL_RATIO", "0.5",
    "BENCH.NUM_IMAGES", "64", "BENCH.IMAGE_SIZE", "64", "BENCH.WARMUP_STEPS", "2",
    "DATA.PIPELINE", "gpu", "MODEL.CHANNELS_LAST", "True",
]  # fmt: skip


@pytest.mark.parametrize("guarded", [True, False])
def test_host_synchronisations_inside_the_step(guarded, tmp_path):
    """The step's only host wait is the non-finite guard's event (BENCH.STEP_GUARD on);
    without the guard the profiled step has none."""
    out = tmp_path / "bench.json"
    argv = ["bench", "--steps", "2", "--out", str(out), "--trace", str(tmp_path / "t.json")]
    assert cli_main([*argv, *BENCH, "BENCH.STEP_GUARD", str(guarded)]) == 0
    syncs = json.loads(out.read_text())["host_syncs_per_step"]
    assert syncs == ({"cudaEventSynchronize": 1.0} if guarded else {})


def test_compiled_bf16_pretraining_on_the_gpu_path(tmp_path):
    """A few steps with torch.compile, bf16 autocast, channels_last and the GPU data path."""
    root = ensure_shapes_imagefolder(tmp_path / "jpeg", "train", 64, 64, 0, image_format="jpeg")
    out = tmp_path / "run"
    opts = ["MODEL.ARCH", "resnet18", "INPUT.SIZE", "32", "SOLVER.BATCH_SIZE", "16",
            "MOCO.K", "32", "MOCO.BN_SPLITS", "2", "DATA.NUM_WORKERS", "2",
            "DATA.LABEL_RATIO", "0.5", "DATA.ROOT", str(root), "DATA.PIPELINE", "gpu",
            "MODEL.COMPILE", "True", "MODEL.CHANNELS_LAST", "True", "SOLVER.MAX_STEPS", "6",
            "LOG.PERIOD", "1", "LOG.TENSORBOARD", "False", "OUTPUT_DIR", str(out)]  # fmt: skip
    assert cli_main(["pretrain", *opts]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["nonfinite_steps"] == 0
    assert np.isfinite(metrics["loss"]) and metrics["peak_memory_gib"] > 0
