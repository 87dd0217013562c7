"""Plot the learning curves of benchmarks/fashion_mnist.sh runs: the online kNN monitor's top-1
against pretraining steps for each method (runs made with PRETRAIN_OPTS="EVAL.KNN_PERIOD 1
EVAL.KNN_K 20"), the random-init encoder's kNN (k 20) as a flat line.

Usage: python benchmarks/fashion_mnist_curves.py OUT PNG [SEED]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from fashion_mnist_table import ROWS  # noqa: E402

# The pretraining methods drawn, in the legend's order.
CURVES = ("moco_v2", "unimoco_10pct", "unimoco_100pct", "moco_v2_co2")


def monitor(run: Path) -> tuple[list[int], list[float]]:
    """(steps, kNN top-1) of the monitor rows of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    rows = [row for row in rows if "knn_top1" in row]
    return [row["step"] for row in rows], [row["knn_top1"] for row in rows]


def plot(out: Path, png: Path, seed: int = 0) -> Path:
    """Write the curves of every method that ran at ``seed`` to ``png``."""
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    last_step = 1
    for method in CURVES:
        run = out / method / f"seed{seed}"
        if (run / "metrics.jsonl").is_file():
            steps, top1 = monitor(run)
            if steps:
                ax.plot(steps, top1, marker="o", markersize=3, label=ROWS[method])
                last_step = max(last_step, steps[-1])
    random_knn = out / "random_init" / f"seed{seed}" / "k20" / "knn_metrics.json"
    if random_knn.is_file():
        value = json.loads(random_knn.read_text())["top1"]
        ax.hlines(value, 0, last_step, colors="grey", linestyles="--", label=ROWS["random_init"])
    ax.set(xlabel="pretraining step", ylabel="kNN top-1, k 20 (%)")
    ax.set_title("Fashion-MNIST: the kNN monitor during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


if __name__ == "__main__":
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    print(plot(Path(sys.argv[1]), Path(sys.argv[2]), seed))
