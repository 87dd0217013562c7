"""Print the Fashion-MNIST table of docs/benchmarks.md from the runs of
benchmarks/fashion_mnist.sh: kNN (k 20, k 200) and linear top-1 per method, mean ± sample
standard deviation over the seeds that finished. The cross-entropy row's linear column is its
own trained classifier, its kNN columns its backbone's; raw pixels are one deterministic run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from digits_table import summary, top1

ROWS = {
    "raw_pixels": "raw pixels",
    "random_init": "random-init encoder",
    "moco_v2": "MoCo v2",
    "unimoco_10pct": "UniMoCo, 10 % labels",
    "unimoco_30pct": "UniMoCo, 30 % labels",
    "unimoco_60pct": "UniMoCo, 60 % labels",
    "unimoco_100pct": "UniMoCo, 100 % labels",
    "moco_v2_co2": "MoCo v2 + CO2",
    "unimoco_10pct_co2": "UniMoCo 10 % + CO2",
    "supervised_ce": "cross-entropy, 100 % labels",
}


def row(out: Path, name: str) -> list[str]:
    """Seeds, kNN k 20, kNN k 200 and linear top-1 cells of one method."""
    if name == "raw_pixels":
        path = out / name / "metrics.json"
        if not path.is_file():
            return ["0", "–", "–", "–"]
        result = json.loads(path.read_text())
        cells = [result["knn20_top1"], result["knn200_top1"], result["linear_top1"]]
        return ["–", *(f"{value:.2f}" for value in cells)]
    runs = sorted((out / name).glob("seed*"))
    knn200, knn20 = top1(runs, "knn"), top1([run / "k20" for run in runs], "knn")
    if name == "supervised_ce":
        trained = top1(runs, "semisup")
        return [str(len(trained)), summary(knn20), summary(knn200), summary(trained)]
    linear = top1(runs, "lincls")
    return [str(len(knn200)), summary(knn20), summary(knn200), summary(linear)]


def main(out: Path) -> None:
    print("| method | seeds | kNN k 20 (%) | kNN k 200 (%) | linear top-1 (%) |")
    print("|---|---|---|---|---|")
    for name, label in ROWS.items():
        print(f"| {label} | {' | '.join(row(out, name))} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "output/fashion_mnist_bench"))
