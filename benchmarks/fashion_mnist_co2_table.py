"""Print the CO2 sweep table of docs/benchmarks.md from benchmarks/fashion_mnist_co2_sweep.sh's
runs: kNN (k 20, k 200) and linear top-1 of MoCo v2 + CO2 per (alpha, tau_c), mean ± sample
standard deviation over the seeds that finished, below MoCo v2 without CO2.

Usage: python benchmarks/fashion_mnist_co2_table.py OUT"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fashion_mnist_table import row

SETTING = re.compile(r"co2_a(?P<alpha>[0-9.e+-]+)_t(?P<tau>[0-9.e+-]+)")


def settings(out: Path) -> list[tuple[float, float, Path]]:
    """(alpha, tau_c, run folder) of every sweep setting under ``out``, sorted by alpha, tau_c."""
    found = []
    for folder in out.glob("co2_a*_t*"):
        match = SETTING.fullmatch(folder.name)
        if match:
            found.append((float(match["alpha"]), float(match["tau"]), folder))
    return sorted(found)


def main(out: Path) -> None:
    print("| setting | seeds | kNN k 20 (%) | kNN k 200 (%) | linear top-1 (%) |")
    print("|---|---|---|---|---|")
    print(f"| MoCo v2, no CO2 | {' | '.join(row(out, 'moco_v2'))} |")
    for alpha, tau, folder in settings(out):
        print(f"| CO2 α {alpha:g}, τc {tau:g} | {' | '.join(row(folder, 'moco_v2_co2'))} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "output/fashion_mnist_co2"))
