"""The report's PNG plots (matplotlib, no display needed): pretraining loss and lr over steps,
kNN accuracy over epochs, each transfer task's metrics per backbone."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .results import BACKBONE_LABELS, Results, TransferResults  # noqa: E402

_DPI = 100
UNIFORM_LABEL = "uniform similarities (no learning)"
_COLOURS = {
    "pretrained": "#1f77b4",
    "random": "#7f7f7f",
    "supervised": "#ff7f0e",
    "moco": "#17becf",
}


def plot_training(results: Results, path: Path) -> Path | None:
    """Loss and lr of the pretraining run against the step; None without any logged step."""
    fig = training_figure(results)
    return None if fig is None else _save(fig, path)


def training_figure(results: Results) -> Figure | None:
    """The loss panel (with the loss at uniform similarities, dashed, where the history logs
    it: a loss that stays on that line learns nothing) and the lr panel; None without steps."""
    rows = [row for row in results.history if "loss" in row]
    if not rows:
        return None
    steps = [row["step"] for row in rows]
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=_DPI)
    ax_loss.plot(steps, [row["loss"] for row in rows], color=_COLOURS["pretrained"], label="loss")
    if any("loss_co2" in row for row in rows):  # the uniform value is the contrastive part's
        contrast = [row.get("loss_contrast", math.nan) for row in rows]
        ax_loss.plot(steps, contrast, color="#9467bd", linewidth=1, label="contrastive part")
    uniform = [uniform_loss(row) for row in rows]
    if any(math.isfinite(value) for value in uniform):
        ax_loss.plot(steps, uniform, "--", color="#7f7f7f", label=UNIFORM_LABEL)
        ax_loss.legend(frameon=False, fontsize=8)
    ax_loss.set(title="pretraining loss", xlabel="step", ylabel="loss")
    ax_lr.plot(steps, [row["lr"] for row in rows], color="#2ca02c")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    return fig


def uniform_loss(row: dict) -> float:
    """The contrastive loss at uniform similarities at one logged step, recovered from the
    logged ratio (``loss_contrast / loss_vs_uniform``); NaN where the row cannot give it."""
    contrast, ratio = row.get("loss_contrast"), row.get("loss_vs_uniform")
    if contrast is None or ratio is None or not math.isfinite(ratio) or ratio == 0:
        return math.nan
    return contrast / ratio


def plot_knn(results: Results, path: Path) -> Path | None:
    """kNN top-1 of the monitor during pretraining against the epoch; None if it did not run."""
    rows = [row for row in results.history if "knn_top1" in row]
    if not rows:
        return None
    epochs = [row["step"] / max(results.steps_per_epoch, 1) for row in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=_DPI)
    ax.plot(epochs, [row["knn_top1"] for row in rows], marker="o", color=_COLOURS["pretrained"])
    ax.set(title="kNN monitor during pretraining", xlabel="epoch", ylabel="top-1 (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_transfer(task: TransferResults, path: Path) -> Path:
    """Grouped bars: the task's metrics (AP / AP50 / AP75 per group, mIoU, mAP, ...) for each
    backbone, values written on the bars."""
    metrics = task.columns
    backbones = list(task.values)
    width = 0.8 / len(backbones)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(metrics) + 2), 3.4), dpi=_DPI)
    for i, name in enumerate(backbones):
        values = [task.values[name].get(group, {}).get(metric) or 0.0 for group, metric in metrics]
        xs = [m + (i - (len(backbones) - 1) / 2) * width for m in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=BACKBONE_LABELS[name], color=_COLOURS[name])
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    prefix = len({group for group, _ in metrics}) > 1
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([f"{group} {m}" if prefix else m for group, m in metrics])
    ax.set(title=f"{task.label} on {task.dataset}", ylabel="%")
    ax.margins(y=0.15)
    ax.legend(frameon=False, fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
