"""``unimoco bench [--config-file F] [--steps N] [--out FILE.json] [KEY VALUE ...]``.

Times the data pipeline alone, the training step alone (synthetic crops) and the two together,
with the pretraining config's data, model and step (``PretrainTrainer``), and reports img/s, the
fraction of time spent waiting for data, peak memory, model FLOP utilisation and, with
``--trace``, the host synchronisations inside the step (profiler). Without a DATA.ROOT it
generates a JPEG folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch.profiler import ProfilerActivity, profile

from .. import distributed as du
from ..data.datasets import DatasetError
from ..data.shapes import default_shapes_root, ensure_shapes_imagefolder
from .command import ArgumentError, Command, config_parser, load_pretrain_cfg
from .data import build_epoch_batches, view_layout
from .flops import train_flops_per_image
from .logging_utils import setup_logger, write_json
from .trainer import PretrainTrainer

# H100 SXM dense bf16 tensor-core peak, TFLOP/s: the default MFU denominator on CUDA.
H100_BF16_TFLOPS = 989.0
# Profiler events that make the host wait for the device (or, on the CPU, that would).
SYNC_EVENTS = (
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
)
PROFILED_STEPS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "unimoco bench",
        "Pretraining throughput: data alone, model step alone, end to end. Prints "
        "img/s, data-wait fraction, peak memory and model FLOP utilisation; BENCH.* keys tune it.",
        config_of="the pretraining config",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase (20)")
    parser.add_argument("--out", default=None, metavar="FILE.json", help="write the results")
    parser.add_argument(
        "--trace",
        default=None,
        metavar="FILE.json",
        help="profile two model steps: write their Chrome trace, count host synchronisations",
    )
    return parser


class UncheckedSteps:
    """Stands in for ``StepGuard`` when BENCH.STEP_GUARD is off: no snapshot, no flag exchange
    (so no host synchronisation), every step applied."""

    consecutive = 0
    stop = False

    def snapshot(self) -> None:
        return None

    def exchange(self, loss: torch.Tensor, stop_requested: bool) -> None:
        return None

    def accept(self, losses: dict[str, torch.Tensor], step: int) -> bool:
        return True


class BenchTrainer(PretrainTrainer):
    """The trainer without the queue-size guard (a timing needs no queue below the data size)
    and, with BENCH.STEP_GUARD off, without the non-finite-loss guard."""

    def __init__(self, cfg: CfgNode, device: torch.device) -> None:
        super().__init__(cfg, device)
        if not cfg.BENCH.STEP_GUARD:
            self.guard = UncheckedSteps()

    def _check_queue_size(self, num_images: int) -> None:
        return None


def bench_cfg(cfg: CfgNode, output_dir: str) -> CfgNode:
    """``cfg`` writing into ``output_dir``, with a generated JPEG folder when no data is named."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = output_dir
    cfg.LOG.TENSORBOARD = False
    if cfg.DATA.NAME == "imagefolder" and not cfg.DATA.ROOT:
        folder = ensure_shapes_imagefolder(
            default_shapes_root(),
            "train",
            cfg.BENCH.NUM_IMAGES,
            cfg.BENCH.IMAGE_SIZE,
            cfg.SEED,
            image_format="jpeg",
        )
        cfg.DATA.ROOT = str(folder)
    cfg.freeze()
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: max_memory_allocated since the last reset; CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def _batches(
    trainer: PretrainTrainer,
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, list[str]]]:
    """The training batches, epoch after epoch, without end."""
    epoch = 0
    while True:
        yield from build_epoch_batches(
            trainer.cfg,
            trainer.dataset,
            trainer.device,
            trainer.local_batch,
            epoch,
            0,
            trainer.rank,
            trainer.world_size,
        )
        epoch += 1


def synthetic_batch(trainer: PretrainTrainer) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random crops on the device in the data path's dtype and layout (so a compiled step is
    not compiled again for the real batches), labels kept with probability DATA.LABEL_RATIO."""
    n, size, device = trainer.local_batch, trainer.cfg.INPUT.SIZE, trainer.device
    layout = view_layout(trainer.cfg, device)
    views = [torch.randn(n, 3, size, size, device=device).to(**layout) for _ in range(2)]
    labels = torch.randint(0, len(trainer.dataset.dataset.classes), (n,), device=device)
    keep = torch.rand(n, device=device) < trainer.cfg.DATA.LABEL_RATIO
    return views, torch.where(keep, labels, torch.full_like(labels, -1))


def time_data(trainer: PretrainTrainer, steps: int, warmup: int) -> dict[str, float]:
    """The pipeline alone: batches ready on the device per second."""
    with contextlib.closing(_batches(trainer)) as batches:
        for _ in range(warmup):
            next(batches)
        _sync(trainer.device)
        start = time.perf_counter()
        for _ in range(steps):
            next(batches)
        _sync(trainer.device)
        elapsed = time.perf_counter() - start
    return {"img_per_s": steps * trainer.local_batch / elapsed, "seconds": elapsed}


def time_step(trainer: PretrainTrainer, steps: int, warmup: int) -> dict[str, float]:
    """The training step alone on synthetic crops."""
    views, labels = synthetic_batch(trainer)
    for _ in range(warmup):
        trainer.train_step(views, labels)
    _sync(trainer.device)
    _reset_peak(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(views, labels)
    _sync(trainer.device)
    elapsed = time.perf_counter() - start
    return {
        "img_per_s": steps * trainer.local_batch / elapsed,
        "seconds": elapsed,
        "peak_memory_gib": peak_memory_gib(trainer.device),
    }


def time_end_to_end(trainer: PretrainTrainer, steps: int, warmup: int) -> dict[str, float]:
    """Data and step together, as the training loop runs them; ``data_wait_fraction`` is the
    share of the wall time the loop spent blocked on the next batch."""
    with contextlib.closing(_batches(trainer)) as batches:

        def step() -> float:
            fetch = time.perf_counter()
            images, labels, bad = next(batches)
            waited = time.perf_counter() - fetch
            if bad:
                images, labels = trainer._complete_batch(images, labels, bad)
            trainer.train_step(images, labels)
            trainer.state.images_seen += trainer.local_batch
            return waited

        for _ in range(warmup):
            step()
        _sync(trainer.device)
        _reset_peak(trainer.device)
        start = time.perf_counter()
        wait = sum(step() for _ in range(steps))
        _sync(trainer.device)
        elapsed = time.perf_counter() - start
    return {
        "img_per_s": steps * trainer.local_batch / elapsed,
        "seconds": elapsed,
        "data_wait_fraction": wait / elapsed,
        "peak_memory_gib": peak_memory_gib(trainer.device),
        "bad_images": trainer.state.bad_images,
    }


def count_host_syncs(trainer: PretrainTrainer, trace: str) -> dict[str, float]:
    """Profiler events that block the host, per training step (synthetic crops); the profile
    goes to ``trace`` (Chrome trace format)."""
    views, labels = synthetic_batch(trainer)
    activities = [ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(PROFILED_STEPS):
            trainer.train_step(views, labels)
        _sync(trainer.device)
    Path(trace).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(trace)
    counts = {event.key: event.count for event in prof.key_averages() if event.key in SYNC_EVENTS}
    return {name: count / PROFILED_STEPS for name, count in sorted(counts.items())}


def _settings(cfg: CfgNode, trainer: PretrainTrainer, steps: int) -> dict[str, Any]:
    return {
        "arch": cfg.MODEL.ARCH,
        "input_size": cfg.INPUT.SIZE,
        "batch_per_process": trainer.local_batch,
        "processes": trainer.world_size,
        "pipeline": cfg.DATA.PIPELINE,
        "aug": cfg.INPUT.AUG,
        "bf16_autocast": trainer.use_amp,
        "channels_last": cfg.MODEL.CHANNELS_LAST,
        "compile": cfg.MODEL.COMPILE,
        "step_guard": cfg.BENCH.STEP_GUARD,
        "loss": cfg.LOSS.NAME,
        "label_ratio": cfg.DATA.LABEL_RATIO,
        "queue": cfg.MOCO.K,
        "bn_splits": cfg.MOCO.BN_SPLITS if cfg.MOCO.SHUFFLE_BN else 1,
        "num_workers": cfg.DATA.NUM_WORKERS,
        "data": cfg.DATA.NAME,
        "data_root": cfg.DATA.ROOT,
        "images": len(trainer.dataset),
        "steps": steps,
        "warmup_steps": cfg.BENCH.WARMUP_STEPS,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def run_bench(cfg: CfgNode, device: torch.device, steps: int, trace: str | None = None) -> dict:
    """All measurements for ``cfg`` on ``device``, as the JSON ``unimoco bench`` writes."""
    with tempfile.TemporaryDirectory(prefix="unimoco-bench-") as output_dir:
        cfg = bench_cfg(cfg, output_dir)
        trainer = BenchTrainer(cfg, device)
        trainer.model.train()
        warmup = cfg.BENCH.WARMUP_STEPS
        data = time_data(trainer, steps, warmup)
        step = time_step(trainer, steps, warmup)
        end_to_end = time_end_to_end(trainer, steps, warmup)
        syncs = count_host_syncs(trainer, trace) if trace else None
    flops = train_flops_per_image(cfg)
    peak = cfg.BENCH.PEAK_TFLOPS or (H100_BF16_TFLOPS if device.type == "cuda" else None)
    for phase in (step, end_to_end):
        phase["mfu"] = flops * phase["img_per_s"] / (peak * 1e12) if peak else None
    world = trainer.world_size
    for phase in (data, step, end_to_end):
        phase["img_per_s"] *= world  # every process ran the same number of steps
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": _device_name(device),
        "torch": torch.__version__,
        "settings": _settings(cfg, trainer, steps),
        "flops_per_image": flops,
        "peak_tflops": peak,
        "memory": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "data": data,
        "step": step,
        "end_to_end": end_to_end,
        "host_syncs_per_step": syncs,
    }


def format_report(result: dict) -> str:
    """The results as a short table."""
    s = result["settings"]
    lines = [
        f"unimoco bench: {s['arch']}, {s['input_size']} px, batch {s['batch_per_process']} x "
        f"{s['processes']}, pipeline {s['pipeline']}, {result['device']}",
        f"{'phase':<12}{'img/s':>10}{'data wait':>11}{'peak mem':>11}{'MFU':>8}",
    ]
    for name, key in (("data", "data"), ("step", "step"), ("end-to-end", "end_to_end")):
        phase = result[key]
        wait = phase.get("data_wait_fraction")
        memory = phase.get("peak_memory_gib")
        mfu = phase.get("mfu")
        lines.append(
            f"{name:<12}{phase['img_per_s']:>10.1f}"
            f"{'' if wait is None else f'{100 * wait:.0f} %':>11}"
            f"{'' if memory is None else f'{memory:.2f} GiB':>11}"
            f"{'' if mfu is None else f'{100 * mfu:.1f} %':>8}"
        )
    lines.append(
        f"flops/image {result['flops_per_image'] / 1e9:.3g} GFLOP (train step), peak "
        f"{result['peak_tflops'] or '-'} TFLOP/s; memory: {result['memory']}"
    )
    syncs = result["host_syncs_per_step"]
    if syncs is not None:
        lines.append(f"host synchronisations per step: {syncs or 'none'}")
    return "\n".join(lines)


def _load(args: argparse.Namespace) -> CfgNode:
    if args.steps < 1:
        raise ArgumentError(f"--steps = {args.steps}; expected at least 1")
    return load_pretrain_cfg(args)


def _run(args: argparse.Namespace, cfg: CfgNode) -> int:
    setup_logger(None, du.is_main_process())
    result = run_bench(cfg, du.init_from_env(), args.steps, args.trace)
    if du.is_main_process():
        print(format_report(result))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_json(args.out, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Time the pretraining config; 2 on bad input."""
    command = Command(
        "bench", build_parser(), _load, _run, statuses={DatasetError: 2}, torchrun=True
    )
    return command.main(argv)


if __name__ == "__main__":
    sys.exit(main())
