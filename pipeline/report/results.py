"""The numbers a report shows, read from the files the jobs wrote."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..plan import transfer_folder

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
# The columns a report shows for each result group of final_metrics.json, in this order (those
# the evaluator reported); a group not listed shows its headline metric.
GROUP_METRICS = {
    "bbox": DETECTION_METRICS,
    "segm": DETECTION_METRICS,
    "keypoints": DETECTION_METRICS,
    "sem_seg": ("mIoU", "fwIoU", "mACC", "pACC", "IoU", "iIoU"),
    "classification": ("mAP",),
}


@dataclass
class TransferResults:
    """One transfer task's numbers: its test data set, headline and metrics per backbone."""

    task: str
    label: str
    dataset: str
    # (result group, metric) the task is summarised by, e.g. ("bbox", "AP").
    headline: tuple[str, str]
    # backbone -> group (bbox / segm / sem_seg / ...) -> metric -> value
    values: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(group, metric) pairs shown, headline group first."""
        first = next(iter(self.values.values()))
        groups = sorted(first, key=lambda group: group != self.headline[0])
        return [
            (group, metric)
            for group in groups
            for metric in GROUP_METRICS.get(group, (self.headline[1],))
            if metric in first[group]
        ]

    def headline_value(self, backbone: str) -> float | None:
        group, metric = self.headline
        return self.values[backbone].get(group, {}).get(metric)


@dataclass
class Results:
    """Classification accuracy (%) and every transfer task's metrics per backbone, the
    pretraining history."""

    backbones: list[str]
    classification: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    # task name -> its results, DETECT first
    transfer: dict[str, TransferResults] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    steps_per_epoch: int = 0
    timings: list[tuple[str, str, float]] = field(default_factory=list)


def collect_results(
    output_dir: Path,
    backbones: list[str],
    timings: list[tuple[str, str, float]],
    tasks: list[str],
) -> Results:
    """Read every job's metrics under ``output_dir``, for every backbone and transfer task; a
    missing file raises (a report with holes would hide a failed stage)."""
    results = Results(list(backbones), timings=list(timings))
    for task in tasks:
        folders = {name: transfer_folder(output_dir, task, name) for name in backbones}
        results.transfer[task] = _transfer_results(task, folders)
    for name in backbones:
        folder = output_dir / "eval" / name
        if folder.exists():
            results.classification[name] = {
                (command, metric): _read_json(folder / f"{command}_metrics.json")[metric]
                for command, metric in CLASSIFICATION_COLUMNS
                if (folder / f"{command}_metrics.json").exists()
            }
    pretrain = output_dir / "pretrain" / "pretrained"
    lines = (pretrain / "metrics.jsonl").read_text().splitlines()
    results.history = [json.loads(line) for line in lines if line.strip()]
    summary = _read_json(pretrain / "metrics.json")
    results.steps_per_epoch = summary["steps"] // max(summary["epochs_completed"], 1)
    return results


def _transfer_results(task: str, folders: dict[str, Path]) -> TransferResults:
    """One task's final_metrics.json of every backbone (its first test data set)."""
    result = None
    for name, folder in folders.items():
        final = _read_json(folder / "final_metrics.json")
        dataset, groups = next(iter(final["results"].items()))
        if result is None:
            lead = final["headline"][dataset]
            result = TransferResults(task, lead["task"], dataset, (lead["group"], lead["metric"]))
        result.values[name] = groups
    return result


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
