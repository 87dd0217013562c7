"""Assemble the report from the results: ``OUTPUT_DIR/report.md``, ``OUTPUT_DIR/report.html``
and the plots in ``OUTPUT_DIR/report/``."""

from __future__ import annotations

from pathlib import Path

from fvcore.common.config import CfgNode

from ... import __version__
from ..config import DETECT_TASK, MOCO_OPTS, transfer_tasks
from .document import Block, Code, Heading, Image, Paragraph, Table, to_html, to_markdown
from .plots import plot_knn, plot_training, plot_transfer
from .results import BACKBONE_LABELS, CLASSIFICATION_COLUMNS, Results, TransferResults

TITLE = "unimoco pipeline report"
# How a result group is named in a table that shows several.
GROUP_LABELS = {"bbox": "box", "segm": "mask", "keypoints": "keypoint", "sem_seg": "sem. seg."}


def plot_name(task: str) -> str:
    """The file of a transfer task's bar plot (the DETECT task's keeps its historical name)."""
    return "detection_ap.png" if task == DETECT_TASK else f"{task}.png"


def classification_table(results: Results) -> Table | None:
    """kNN / linear top-1 and top-5 per backbone, on the pretraining data's held-out split."""
    columns = [key for key in CLASSIFICATION_COLUMNS if _any_has(results, key)]
    if not columns:
        return None
    rows = [
        [
            BACKBONE_LABELS[name],
            *(_number(results.classification[name].get(key)) for key in columns),
        ]
        for name in results.backbones
        if name in results.classification
    ]
    return Table(["backbone", *(CLASSIFICATION_COLUMNS[key] for key in columns)], rows)


def transfer_table(task: TransferResults) -> Table:
    """The task's metrics per backbone (AP / AP50 / AP75 per detection group, mIoU ..., mAP),
    with the headline metric gained over random init."""
    columns = task.columns
    prefix = len({group for group, _ in columns}) > 1
    header = ["backbone"]
    header += [f"{GROUP_LABELS.get(group, group)} {m}" if prefix else m for group, m in columns]
    baseline = "random" in task.values
    if baseline:
        header.append(f"{task.headline[1]} vs random")
    rows = []
    for name, groups in task.values.items():
        row = [BACKBONE_LABELS[name]]
        row += [_number(groups.get(group, {}).get(metric)) for group, metric in columns]
        if baseline:
            gain = _difference(task.headline_value(name), task.headline_value("random"))
            row.append("—" if name == "random" else gain)
        rows.append(row)
    return Table(header, rows)


def timing_table(results: Results) -> Table:
    """Wall time of every job (as recorded when it ran) and their sum."""
    rows = [[stage, name, f"{seconds:.0f} s"] for stage, name, seconds in results.timings]
    rows.append(["total", "", f"{sum(seconds for *_, seconds in results.timings):.0f} s"])
    return Table(["stage", "backbone", "wall time"], rows)


def recipe_table(cfg: CfgNode) -> Table:
    """Each stage's config file and the overrides the pipeline applies to it."""
    rows = [["pretrain", _short_path(cfg.PRETRAIN.CONFIG_FILE), _pairs(cfg.PRETRAIN.OPTS)]]
    for name, opts in (("supervised", cfg.SUPERVISED.OPTS), ("moco", MOCO_OPTS)):
        if name in cfg.BASELINES:
            rows.append([f"pretrain ({name})", "the pretraining config", _pairs(opts)])
    rows.append(["eval (knn, lincls)", "the pretraining config", _pairs(cfg.EVAL.OPTS)])
    for task, node in transfer_tasks(cfg).items():
        rows.append([task, _short_path(node.CONFIG_FILE), _pairs(node.OPTS)])
    return Table(["stage", "config file", "overrides"], rows)


def headline(task: TransferResults, pretrained: str) -> str:
    """One sentence: a task's headline metric for each backbone, and what pretraining bought."""
    metric = task.headline[1]
    parts = [
        f"{BACKBONE_LABELS[name]} {_number(task.headline_value(name))}" for name in task.values
    ]
    text = f"{task.label.capitalize()} {metric} on {task.dataset}: " + ", ".join(parts) + "."
    if "random" in task.values:
        gain = _difference(task.headline_value(pretrained), task.headline_value("random"))
        text += f" Pretraining changed {metric} by {gain} points over random initialisation."
    return text


def build_blocks(results: Results, cfg: CfgNode, plot_dir: Path) -> list[Block]:
    """The report's content, top to bottom."""
    tasks = results.transfer.values()
    blocks: list[Block] = [
        *(Paragraph(headline(task, results.backbones[0])) for task in tasks),
        Paragraph(
            "Every backbone is evaluated and fine-tuned with the same recipe; each stage's "
            f"outputs are in {cfg.OUTPUT_DIR}/<stage>/<backbone>/. Written by unimoco "
            f"{__version__}."
        ),
    ]
    table = classification_table(results)
    if table is not None:
        blocks += [
            Heading("Classification (frozen backbone, held-out split)"),
            table,
        ]
    for task in tasks:
        plot = plot_transfer(task, plot_dir / plot_name(task.task))
        blocks += [
            Heading(f"{task.label.capitalize()} ({task.dataset})"),
            transfer_table(task),
            Image(plot, f"{task.label} {task.headline[1]} per backbone"),
        ]
    blocks.append(Heading("Pretraining"))
    for plot, name, alt in (
        (plot_training, "training.png", "pretraining loss and learning rate over steps"),
        (plot_knn, "knn.png", "kNN top-1 over pretraining epochs"),
    ):
        path = plot(results, plot_dir / name)
        if path is not None:
            blocks.append(Image(path, alt))
    blocks += [
        Heading("Stages"),
        timing_table(results),
        Heading("Config"),
        recipe_table(cfg),
        Paragraph(f"The resolved pipeline config ({cfg.OUTPUT_DIR}/pipeline.yaml):"),
        Code(cfg.dump(default_flow_style=None, width=96)),
    ]
    return blocks


def write_report(results: Results, cfg: CfgNode, plot_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` next to ``plot_dir``; returns both paths."""
    output_dir = plot_dir.parent
    blocks = build_blocks(results, cfg, plot_dir)
    markdown = output_dir / "report.md"
    page = output_dir / "report.html"
    markdown.write_text(to_markdown(TITLE, blocks, output_dir))
    page.write_text(to_html(TITLE, blocks))
    return markdown, page


def _pairs(opts) -> str:
    values = [str(v) for v in opts]
    pairs = [f"{k} {v or repr(v)}" for k, v in zip(values[::2], values[1::2])]
    return ", ".join(pairs) or "none"


def _short_path(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _any_has(results: Results, key: tuple[str, str]) -> bool:
    return any(key in values for values in results.classification.values())


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _difference(value: float | None, baseline: float | None) -> str:
    return "n/a" if value is None or baseline is None else f"{value - baseline:+.2f}"
