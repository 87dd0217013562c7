"""The numbers a report shows, read from the files the jobs wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# What each backbone is called in tables and plots.
BACKBONE_LABELS = {
    "pretrained": "pretrained (ours)",
    "random": "random init",
    "supervised": "supervised (all labels)",
    "moco": "MoCo (0 % labels)",
}
CLASSIFICATION_COLUMNS = {
    ("knn", "top1"): "kNN top-1",
    ("knn", "top5"): "kNN top-5",
    ("lincls", "top1"): "linear top-1",
    ("lincls", "top5"): "linear top-5",
}
DETECTION_METRICS = ("AP", "AP50", "AP75")


@dataclass
class Results:
    """Classification accuracy (%) and detection AP per backbone, the pretraining history."""

    backbones: list[str]
    classification: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    # backbone -> task (bbox / segm) -> metric -> value
    detection: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    detection_dataset: str = ""
    history: list[dict] = field(default_factory=list)
    steps_per_epoch: int = 0
    timings: list[tuple[str, str, float]] = field(default_factory=list)


def collect_results(
    output_dir: Path, backbones: list[str], timings: list[tuple[str, str, float]]
) -> Results:
    """Read every job's metrics under ``output_dir``; a missing file raises (a report with
    holes would hide a failed stage)."""
    results = Results(list(backbones), timings=list(timings))
    for name in backbones:
        folder = output_dir / "eval" / name
        if folder.exists():
            results.classification[name] = {
                (command, metric): _read_json(folder / f"{command}_metrics.json")[metric]
                for command, metric in CLASSIFICATION_COLUMNS
                if (folder / f"{command}_metrics.json").exists()
            }
        final = _read_json(output_dir / "detect" / name / "final_metrics.json")["results"]
        results.detection_dataset, tasks = next(iter(final.items()))
        results.detection[name] = {
            task: {metric: values[metric] for metric in DETECTION_METRICS}
            for task, values in tasks.items()
        }
    pretrain = output_dir / "pretrain" / "pretrained"
    lines = (pretrain / "metrics.jsonl").read_text().splitlines()
    results.history = [json.loads(line) for line in lines if line.strip()]
    summary = _read_json(pretrain / "metrics.json")
    results.steps_per_epoch = summary["steps"] // max(summary["epochs_completed"], 1)
    return results


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
