"""Print the digits table of docs/benchmarks.md from the runs of benchmarks/digits.sh: kNN and
linear top-1 per method, mean ± sample standard deviation over the seeds that finished."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROWS = {
    "random_init": "random-init encoder",
    "moco_v2": "MoCo v2",
    "unimoco_10pct": "UniMoCo, 10 % labels",
    "unimoco_100pct": "UniMoCo, 100 % labels",
    "moco_v2_co2": "MoCo v2 + CO2",
}


def summary(values: list[float]) -> str:
    """``mean ± std`` (sample std) of ``values``, or ``mean`` alone for a single value."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def top1(run_dirs: list[Path], command: str) -> list[float]:
    """Top-1 of ``command`` in each run directory that has its metrics."""
    files = [run / f"{command}_metrics.json" for run in run_dirs]
    return [json.loads(path.read_text())["top1"] for path in files if path.is_file()]


def main(out: Path) -> None:
    print("| method | seeds | kNN top-1 (%) | linear top-1 (%) |")
    print("|---|---|---|---|")
    for name, label in ROWS.items():
        runs = sorted((out / name).glob("seed*"))
        knn, linear = top1(runs, "knn"), top1(runs, "lincls")
        print(f"| {label} | {len(knn)} | {summary(knn)} | {summary(linear)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "output/digits_bench"))
