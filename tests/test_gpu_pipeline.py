"""The GPU data path on CPU tensors: which files go to the batched JPEG decoder, the PIL fallback
for the rest, bad files skipped and counted, seeded batches, and pretraining steps end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEVICES
from PIL import Image
from torch.utils.data import DataLoader

from unimoco.cli import main as cli_main
from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.data.augment_params import AugmentSpec
from unimoco.pretrain.data.datasets import ImageListDataset, Unreadable, load_rgb
from unimoco.pretrain.data.encoded import (
    EncodedImages,
    batch_decodable,
    collate_encoded,
    decode_batch,
)
from unimoco.pretrain.data.shapes import ensure_shapes_imagefolder
from unimoco.pretrain.engine.data import view_layout
from unimoco.pretrain.engine.gpu_pipeline import GpuAugmentedBatches
from unimoco.pretrain.model.unimoco import UniMoCo

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _rgb(seed: int = 0, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """One class folder holding every kind of file the decoders must cope with."""
    folder = tmp_path / "data" / "things"
    folder.mkdir(parents=True)
    rgb_jpeg = _encode(_rgb(0), "JPEG", quality=90)
    files = {
        "a_rgb.jpg": rgb_jpeg,
        "b_progressive.jpg": _encode(_rgb(1), "JPEG", progressive=True),
        "c_gray.jpg": _encode(_rgb(2).convert("L"), "JPEG"),
        "d_cmyk.jpg": _encode(_rgb(3).convert("CMYK"), "JPEG"),
        "e_image.png": _encode(_rgb(4), "PNG"),
        "f_not_an_image.jpg": b"definitely not an image" * 10,
        "g_truncated.jpg": rgb_jpeg[: len(rgb_jpeg) // 3],
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return tmp_path / "data"


def test_only_plain_rgb_jpegs_go_to_the_batched_decoder():
    assert batch_decodable(_encode(_rgb(), "JPEG"))
    assert batch_decodable(_encode(_rgb(), "JPEG", progressive=True))
    assert not batch_decodable(_encode(_rgb().convert("L"), "JPEG"))
    assert not batch_decodable(_encode(_rgb().convert("CMYK"), "JPEG"))
    assert not batch_decodable(_encode(_rgb(), "PNG"))
    assert not batch_decodable(b"\xff\xd8\xff")
    assert not batch_decodable(b"")


@pytest.mark.parametrize("device", DEVICES)
def test_fallbacks_decode_or_skip_every_kind_of_file(device, mixed_folder):
    """PNG, grey and CMYK JPEGs are decoded by PIL in the worker (as the CPU path would); the
    unreadable and the truncated files are skipped and named; nothing raises. On CUDA the
    baseline and progressive JPEGs go through nvJPEG."""
    dataset = EncodedImages(ImageListDataset.from_folder(mixed_folder))
    items = [dataset[i] for i in range(len(dataset))]
    names = [Path(path).name for path, _ in dataset.dataset.samples]
    kinds = {
        name: (None if isinstance(item, Unreadable) else item.encoded)
        for name, item in zip(names, items)
    }
    assert kinds == {
        "a_rgb.jpg": True,
        "b_progressive.jpg": True,
        "c_gray.jpg": False,
        "d_cmyk.jpg": False,
        "e_image.png": False,
        "f_not_an_image.jpg": None,
        "g_truncated.jpg": True,  # its header is fine: the decoder finds the damage
    }
    for name, item in zip(names, items):
        if not isinstance(item, Unreadable) and not item.encoded:
            expected = np.asarray(load_rgb(mixed_folder / "things" / name)).transpose(2, 0, 1)
            assert torch.equal(item.payload, torch.from_numpy(expected.copy()))

    batch = collate_encoded(items)
    folder = mixed_folder / "things"
    assert batch.bad == [str(folder / "f_not_an_image.jpg")] and len(batch.payloads) == 6
    good = [item for item in items if not isinstance(item, Unreadable)]
    assert all(torch.equal(p, item.payload) for p, item in zip(batch.payloads, good))
    # The three JPEGs travel back to back in one tensor (one shared-memory segment per batch).
    jpegs = [item.payload for item in good if item.encoded]
    assert torch.equal(batch.jpeg_bytes, torch.cat(jpegs)) and len(batch.decoded) == 3
    images, keep, failed = decode_batch(batch, torch.device(device), dataset.describe)
    assert keep.tolist() == [0, 1, 2, 3, 4]  # the truncated JPEG is dropped
    assert failed == [str(folder / "g_truncated.jpg")]
    assert all(image.dtype == torch.uint8 and image.shape == (3, 30, 40) for image in images)
    assert all(image.device.type == device for image in images)
    for image, name in zip(images, ("a_rgb.jpg", "b_progressive.jpg")):
        pil = np.asarray(load_rgb(mixed_folder / "things" / name)).transpose(2, 0, 1)
        difference = (image.cpu().int() - torch.from_numpy(pil.copy()).int()).abs()
        assert difference.float().mean() < 1.0  # IDCT rounding may differ from PIL's


def _loader(folder: Path, batch_size: int) -> tuple[DataLoader, EncodedImages]:
    dataset = EncodedImages(ImageListDataset.from_folder(folder))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_encoded)
    return loader, dataset


def test_batches_are_seeded_and_name_bad_images(mixed_folder):
    """The views are a function of (seed, epoch, batch, rank), with or without the prefetch
    thread; bad images leave the batch and are named, whether the worker or the decoder found
    them."""
    loader, dataset = _loader(mixed_folder, 7)
    spec = AugmentSpec(16)

    def run(prefetch: int, seed: int = 0):
        batches = GpuAugmentedBatches(loader, spec, CPU, seed, 0, 0, 0, prefetch, dataset.describe)
        return list(batches)

    ((views, targets, bad),) = run(0)
    assert [Path(name).name for name in bad] == ["f_not_an_image.jpg", "g_truncated.jpg"]
    assert targets.tolist() == [0] * 5
    assert views[0].shape == views[1].shape == (5, 3, 16, 16)
    ((threaded, _, _),) = run(1)
    assert all(torch.equal(a, b) for a, b in zip(views, threaded))
    ((other_seed, _, _),) = run(0, seed=1)
    assert not torch.equal(views[0], other_seed[0])


def test_prefetch_thread_reraises_and_stops(mixed_folder):
    """An error in the worker thread reaches the consumer; stopping early ends the thread."""
    loader, _ = _loader(mixed_folder, 2)

    class Broken(GpuAugmentedBatches):
        def prepare(self, batch, number):
            if number == 1:
                raise RuntimeError("boom")
            return super().prepare(batch, number)

    with pytest.raises(RuntimeError, match="boom"):
        list(Broken(loader, AugmentSpec(16), CPU, 0, 0, 0, 0, 1))
    batches = iter(GpuAugmentedBatches(loader, AugmentSpec(16), CPU, 0, 0, 0, 0, 1))
    next(batches)
    batches.close()


def test_pipeline_key_is_validated():
    with pytest.raises(ConfigError, match="DATA.PIPELINE"):
        load_cfg(None, ["DATA.PIPELINE", "dali"])


def test_gpu_pipeline_pretrains_on_cpu(tmp_path):
    """Two pretraining steps through the GPU path on a JPEG folder, on CPU tensors."""
    root = ensure_shapes_imagefolder(tmp_path / "jpeg", "train", 64, 40, 0, image_format="jpeg")
    out = tmp_path / "run"
    opts = ["DATA.ROOT", str(root), "DATA.PIPELINE", "gpu", "INPUT.SIZE", "32",
            "MODEL.ARCH", "resnet18", "MOCO.K", "32", "MOCO.BN_SPLITS", "2",
            "SOLVER.BATCH_SIZE", "16", "SOLVER.MAX_STEPS", "2", "DATA.NUM_WORKERS", "1",
            "DATA.LABEL_RATIO", "0.5", "LOG.PERIOD", "1", "LOG.TENSORBOARD", "False",
            "OUTPUT_DIR", str(out)]  # fmt: skip
    assert cli_main(["pretrain", *opts]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["bad_images"] == 0
    assert np.isfinite(metrics["loss"])


def test_compile_encoders_keeps_the_state_dict():
    """MODEL.COMPILE compiles in place: checkpoints keep their names and the model still runs
    (the eager backend stands in for inductor to keep the test fast)."""
    model = UniMoCo("resnet18", queue_size=16, bn_splits=2)
    names = set(model.state_dict())
    model.compile_encoders(backend="eager")
    assert set(model.state_dict()) == names
    images = torch.randn(4, 3, 32, 32)
    out = model(images, images.clone())
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("head", ["fc", "mlp"])
def test_encoders_compile_into_one_graph(head):
    """Dynamo traces each encoder (split BN, channels_last) without a graph break: a break
    would split the compiled step and put Python back between its kernels on the GPU."""
    model = UniMoCo("resnet18", queue_size=16, head=head, bn_splits=2, cifar_stem=True)
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for encoder in (model.encoder_q, model.encoder_k):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(encoder)(images)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
    torch._dynamo.reset()


def test_bf16_channels_last_views_are_the_float_views_cast(mixed_folder):
    """The layout options only cast and re-lay the views (what the step would do itself)."""
    loader, dataset = _loader(mixed_folder, 7)
    spec = AugmentSpec(16)
    ((plain, _, _),) = GpuAugmentedBatches(loader, spec, CPU, 0, 0, 0, 0, 0)
    laid_out = GpuAugmentedBatches(
        loader, spec, CPU, 0, 0, 0, 0, 0, dtype=torch.bfloat16, memory_format=torch.channels_last
    )
    ((views, _, _),) = laid_out
    for view, reference in zip(views, plain):
        assert view.dtype == torch.bfloat16
        assert view.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(view, reference.to(torch.bfloat16))


def test_bf16_views_give_the_step_under_autocast_the_same_values():
    """Under bf16 autocast the first convolution rounds its input to bf16, so bf16 views leave
    the losses and keys of a step unchanged."""
    x_q, x_k = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    labels = torch.tensor([0, -1, 1, 0])
    outputs = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = UniMoCo("resnet18", queue_size=16, bn_splits=2, cifar_stem=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(model(x_q.to(dtype), x_k.to(dtype), labels))
    for name in ("loss", "keys"):
        assert torch.equal(outputs[0][name], outputs[1][name]), name


def test_view_layout_follows_the_pipeline_amp_and_channels_last():
    """bf16 only for the GPU path under AMP on CUDA; channels_last only where asked, on the GPU
    path (the CPU path's collate leaves the conversion to the step)."""
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    gpu = ["DATA.PIPELINE", "gpu", "MODEL.CHANNELS_LAST", "True"]
    assert view_layout(load_cfg(None, gpu), cuda) == {
        "dtype": torch.bfloat16,
        "memory_format": torch.channels_last,
    }
    assert view_layout(load_cfg(None, gpu), CPU)["dtype"] == torch.float32
    no_amp = load_cfg(None, [*gpu, "SOLVER.AMP", "False"])
    assert view_layout(no_amp, cuda)["dtype"] == torch.float32
    cpu_path = load_cfg(None, ["MODEL.CHANNELS_LAST", "True"])
    assert view_layout(cpu_path, cuda) == {
        "dtype": torch.float32,
        "memory_format": torch.contiguous_format,
    }
