"""The pretraining loop: SGD or AdamW on the query encoder, lr schedule, AMP, checkpoints, logs."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from .. import distributed as du
from ..checkpoint import (
    FINAL_CHECKPOINT,
    LAST_CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
)
from ..config import ConfigError, config_hash
from ..config_checks import keys_per_image
from ..data.datasets import build_dataset
from ..data.label_subset import apply_label_subset
from ..eval.knn import knn_monitor
from ..log_names import LOGGER_NAME
from ..model.unimoco import UniMoCo
from .collapse import CollapseMonitor
from .data import build_epoch_batches, train_transform, wrap_train_dataset
from .logging_utils import MetricsWriter, write_json
from .optim import build_optimizer
from .preemption import Preempted, StopSignal
from .progress import ProgressBar
from .schedule import build_lr_schedule
from .step_guard import StepGuard

logger = logging.getLogger(LOGGER_NAME)


# How many unreadable files the too-many-bad-images error names (the log names every one).
NAMED_BAD_IMAGES = 5


class TooManyBadImages(RuntimeError):
    """More images failed to decode than DATA.MAX_BAD_FRACTION allows."""


@dataclass
class TrainState:
    """Where training stands: the next step to run, as a global step and within its epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    images_seen: int = 0
    bad_images: int = 0
    nonfinite_steps: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PretrainTrainer:
    """Builds data, model and optimizer from a config and runs (or resumes) pretraining."""

    def __init__(self, cfg, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.rank, self.world_size = du.get_rank(), du.get_world_size()
        if cfg.SOLVER.BATCH_SIZE % self.world_size:
            raise ConfigError(
                f"SOLVER.BATCH_SIZE = {cfg.SOLVER.BATCH_SIZE} (global) is not divisible by the "
                f"{self.world_size} processes"
            )
        self.local_batch = cfg.SOLVER.BATCH_SIZE // self.world_size
        seed_everything(cfg.SEED + self.rank)

        self.dataset = self._build_dataset()
        self.steps_per_epoch = len(self.dataset) // cfg.SOLVER.BATCH_SIZE
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"SOLVER.BATCH_SIZE = {cfg.SOLVER.BATCH_SIZE} exceeds the {len(self.dataset)} "
                "training images"
            )
        self._check_queue_size(len(self.dataset))
        self.total_steps = cfg.SOLVER.EPOCHS * self.steps_per_epoch
        if cfg.SOLVER.MAX_STEPS:
            self.total_steps = min(self.total_steps, cfg.SOLVER.MAX_STEPS)

        self.model = UniMoCo.from_config(cfg).to(device)
        if cfg.MODEL.CHANNELS_LAST:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.MODEL.COMPILE:
            self.model.compile_encoders()
        self.base_lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
        self.optimizer = build_optimizer(cfg, self.model.encoder_q.parameters(), self.base_lr)
        self.schedule = build_lr_schedule(cfg, self.steps_per_epoch)
        self.ddp_model = (
            DistributedDataParallel(
                self.model,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,
            )
            if self.world_size > 1
            else self.model
        )
        self.use_amp = cfg.SOLVER.AMP and device.type == "cuda"
        self.guard = StepGuard(self.model, cfg.SOLVER.MAX_NONFINITE)
        self.stop_signal = StopSignal()
        self.state = TrainState()
        self.last_scalars: dict[str, float] = {}
        self.monitor_inputs: dict[str, torch.Tensor] = {}
        self.collapse_monitor = CollapseMonitor(
            cfg.LOG.PLATEAU_TOLERANCE,
            cfg.LOG.PLATEAU_WINDOWS,
            start_step=int(
                max(cfg.SOLVER.WARMUP_EPOCHS, cfg.LOSS.LABEL_WARMUP_EPOCHS) * self.steps_per_epoch
            ),
        )
        self.bad_names: list[str] = []  # the first NAMED_BAD_IMAGES unreadable files seen here

    def _build_dataset(self) -> Dataset:
        cfg = self.cfg
        # The main process builds first: generated data (shapes) is then written only once.
        if not du.is_main_process():
            du.barrier()
        dataset = build_dataset(cfg, "train", train_transform(cfg))
        if du.is_main_process():
            du.barrier()
        targets, mask = apply_label_subset(
            dataset.targets,
            dataset.sample_ids,
            cfg.DATA.LABEL_RATIO,
            cfg.DATA.LABELED_LIST,
            cfg.SEED,
            self.output_dir if du.is_main_process() else None,
        )
        dataset.targets = list(targets)
        logger.info(
            "data: %s, %d images, %d classes, %d labeled (%.1f%%)",
            cfg.DATA.NAME,
            len(dataset),
            len(dataset.classes),
            int(mask.sum()),
            100.0 * mask.mean() if len(mask) else 0.0,
        )
        return wrap_train_dataset(cfg, dataset)

    def _check_queue_size(self, num_images: int) -> None:
        """An image's own older keys must not sit in the queue as its negatives (methods.md §2);
        the symmetric loss queues two keys per image, so the queue spans half as many images."""
        limit = keys_per_image(self.cfg) * (num_images - self.cfg.SOLVER.BATCH_SIZE)
        if self.cfg.MOCO.K > limit:
            raise ConfigError(
                f"MOCO.K = {self.cfg.MOCO.K} is too large for {num_images} training images with "
                f"batch {self.cfg.SOLVER.BATCH_SIZE}: the queue would hold keys of the query's own "
                f"image as negatives. Use MOCO.K <= {max(limit, 0)}."
            )

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "step_in_epoch": self.state.step_in_epoch,
            "images_seen": self.state.images_seen,
            "bad_images": self.state.bad_images,
            "nonfinite_steps": self.state.nonfinite_steps,
            "rng": rng,
            "arch": self.cfg.MODEL.ARCH,
            "cfg": self.cfg.dump(),
            "cfg_hash": config_hash(self.cfg),
        }

    def save(self, name: str = LAST_CHECKPOINT) -> None:
        if du.is_main_process():
            path = save_checkpoint(
                self.state_dict(), self.output_dir / name, self.output_dir / PREVIOUS_CHECKPOINT
            )
            logger.info("checkpoint: %s (step %d)", path, self.state.step)
        du.barrier()

    def save_final(self) -> None:
        """The slim result of the run: weights, queues and config, without optimizer state."""
        if du.is_main_process():
            state = self.state_dict()
            final = {
                key: state[key] for key in ("model", "step", "epoch", "arch", "cfg", "cfg_hash")
            }
            path = save_checkpoint(final, self.output_dir / FINAL_CHECKPOINT)
            logger.info("final checkpoint: %s", path)
        du.barrier()

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore everything from ``path`` or the output dir's last good checkpoint (the one
        before when the last is corrupt); False if there is none."""
        found = (
            (Path(path), load_checkpoint(path)) if path else load_resume_checkpoint(self.output_dir)
        )
        if found is None:
            logger.info("resume: no checkpoint in %s, starting from scratch", self.output_dir)
            return False
        path, ckpt = found
        missing = [key for key in ("model", "optimizer", "step", "rng") if key not in ckpt]
        if missing:
            raise ConfigError(f"{path} is not a pretraining checkpoint: missing {missing}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(
            step=ckpt["step"],
            epoch=ckpt["epoch"],
            step_in_epoch=ckpt["step_in_epoch"],
            images_seen=ckpt["images_seen"],
            bad_images=ckpt["bad_images"],
            nonfinite_steps=ckpt.get("nonfinite_steps", 0),
        )
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        if ckpt.get("cfg_hash") != config_hash(self.cfg):
            logger.warning("resume: %s was written with a different config", path)
        logger.info("resume: %s at epoch %d, step %d", path, self.state.epoch, self.state.step)
        return True

    # -- training ------------------------------------------------------------------------------

    def _set_lr(self) -> float:
        lr = self.base_lr * self.schedule(self.state.step / max(self.total_steps, 1))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _complete_batch(self, images: list[torch.Tensor], labels: torch.Tensor, bad: list[str]):
        """Replace dropped (undecodable) images, named in ``bad``, by repeats of good ones, so
        every rank keeps the batch size that split BN and the all-gathers rely on."""
        self.state.bad_images += len(bad)
        self.bad_names += bad[: NAMED_BAD_IMAGES - len(self.bad_names)]
        seen = self.state.images_seen + self.local_batch
        if self.state.bad_images > self.cfg.DATA.MAX_BAD_FRACTION * seen:
            raise TooManyBadImages(
                f"{self.state.bad_images} of {seen} images failed to decode, more than "
                f"DATA.MAX_BAD_FRACTION = {self.cfg.DATA.MAX_BAD_FRACTION}: "
                f"{', '.join(self.bad_names)}"
                f"{' ...' if self.state.bad_images > len(self.bad_names) else ''}"
                f"; the 'cannot decode' warnings above and in {self.output_dir / 'log.txt'} name "
                "every one"
            )
        if len(labels) == 0:
            raise TooManyBadImages(f"a whole batch of images failed to decode: {', '.join(bad)}")
        repeat = torch.arange(self.local_batch) % len(labels)
        return [view[repeat] for view in images], labels[repeat]

    def train_step(self, images: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        im_q, im_k = (view.to(self.device, non_blocking=True) for view in images)
        if self.cfg.MODEL.CHANNELS_LAST:
            im_q = im_q.contiguous(memory_format=torch.channels_last)
            im_k = im_k.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        self.guard.snapshot()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            out = self.ddp_model(im_q, im_k, labels)
        self.guard.exchange(out["loss"], self.stop_signal.requested)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        losses = {name: value.detach() for name, value in out.items() if name.startswith("loss")}
        self.monitor_inputs = {name: out[name] for name in ("uniform_loss", "key_cosine")}
        if self.guard.accept(losses, self.state.step + 1):
            self.optimizer.step()
            self.model.enqueue(out["keys"], self._queued_labels(out["labels"]))
        else:
            self.state.nonfinite_steps += 1
            self.metrics.write(self.state.step + 1, {"nonfinite_steps": self.state.nonfinite_steps})
        return losses

    def _queued_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The batch's labels as the label queue takes them: all -1 during the label warm-up."""
        if self.state.step < self.cfg.LOSS.LABEL_WARMUP_EPOCHS * self.steps_per_epoch:
            return torch.full_like(labels, -1)
        return labels

    def train(self) -> dict[str, float]:
        """Run until ``total_steps``; checkpoints every epoch (and every PERIOD_STEPS)."""
        cfg = self.cfg
        self.metrics = MetricsWriter(self.output_dir, du.is_main_process(), cfg.LOG.TENSORBOARD)
        self.progress = ProgressBar(self.total_steps, self.state.step, cfg.LOG.PROGRESS)
        self.model.train()
        logger.info(
            "training %s for %d steps (%d per epoch), global batch %d, lr %.4g",
            cfg.MODEL.ARCH,
            self.total_steps,
            self.steps_per_epoch,
            cfg.SOLVER.BATCH_SIZE,
            self.base_lr,
        )
        start_time, start_step = time.perf_counter(), self.state.step
        self.stop_signal.install()
        try:
            while self.state.step < self.total_steps:
                self._run_epoch()
                if self.state.step_in_epoch == self.steps_per_epoch:
                    self.state.epoch += 1
                    self.state.step_in_epoch = 0
                    knn_monitor(
                        self.model.encoder_q,
                        cfg,
                        self.device,
                        self.state.epoch,
                        self.state.step,
                        self.metrics,
                    )
                    if self.state.step < self.total_steps:
                        self.save()
        finally:
            self.stop_signal.restore()
            self.progress.close()
            self.metrics.close()
        self.save()
        self.save_final()
        elapsed = time.perf_counter() - start_time
        summary = {
            **{k: v for k, v in self.last_scalars.items() if k.startswith("loss")},
            "steps": self.state.step,
            "epochs_completed": self.state.epoch,
            "bad_images": self.state.bad_images,
            "nonfinite_steps": self.state.nonfinite_steps,
            "img_per_s": (self.state.step - start_step)
            * cfg.SOLVER.BATCH_SIZE
            / max(elapsed, 1e-9),
            "wall_time_s": elapsed,
        }
        if self.device.type == "cuda":
            summary["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if du.is_main_process():
            write_json(self.output_dir / "metrics.json", summary)
        logger.info("done: %s", summary)
        return summary

    def _run_epoch(self) -> None:
        """Steps from ``state.step_in_epoch`` to the end of the epoch (or of training)."""
        cfg = self.cfg
        loader = build_epoch_batches(
            cfg,
            self.dataset,
            self.device,
            self.local_batch,
            self.state.epoch,
            self.state.step_in_epoch,
            self.rank,
            self.world_size,
        )
        window_start, window_images, data_time = time.perf_counter(), 0, 0.0
        fetch_start = time.perf_counter()
        for images, labels, bad in loader:
            data_time += time.perf_counter() - fetch_start
            if bad:
                images, labels = self._complete_batch(images, labels, bad)
            lr = self._set_lr()
            losses = self.train_step(images, labels)
            self.state.step += 1
            self.state.step_in_epoch += 1
            self.state.images_seen += cfg.SOLVER.BATCH_SIZE
            window_images += cfg.SOLVER.BATCH_SIZE
            self.progress.update()
            log_step = self.state.step % cfg.LOG.PERIOD == 0 or self.state.step == self.total_steps
            if log_step and not self.guard.consecutive:  # a skipped step was logged already
                elapsed = time.perf_counter() - window_start
                scalars = {name: float(value) for name, value in losses.items()}
                scalars.update(
                    self.collapse_monitor.observe(
                        self.state.step,
                        scalars["loss_contrast"],
                        float(self.monitor_inputs["uniform_loss"]),
                        float(self.monitor_inputs["key_cosine"]),
                    )
                )
                scalars.update(
                    lr=lr, img_per_s=window_images / elapsed, data_time=data_time / elapsed
                )
                self._log(scalars)
                window_start, window_images, data_time = time.perf_counter(), 0, 0.0
            period = cfg.CHECKPOINT.PERIOD_STEPS
            if period and self.state.step % period == 0 and self.state.step < self.total_steps:
                self.save()
            if self.state.step >= self.total_steps:
                return
            if self.guard.stop:
                self._stop_on_signal()
            fetch_start = time.perf_counter()

    def _stop_on_signal(self) -> None:
        """Preemption: checkpoint at this step boundary, then raise :class:`Preempted`."""
        self.save()
        raise Preempted(
            self.stop_signal.number,
            f"stopped by {self.stop_signal.name} at step {self.state.step}: checkpoint "
            f"{self.output_dir / LAST_CHECKPOINT} written; run again with --resume to continue",
        )

    def _log(self, scalars: dict[str, float]) -> None:
        text = "  ".join(
            f"{name} {value:.4g}" for name, value in scalars.items() if name != "data_time"
        )
        line = (
            f"epoch {self.state.epoch} step {self.state.step}/{self.total_steps}  {text}  "
            f"data {100 * scalars['data_time']:.0f}%"
        )
        self.progress.set_postfix(loss=scalars["loss"], lr=scalars["lr"])
        self.metrics.write(self.state.step, scalars)
        self.last_scalars = scalars
        logger.info(line)
