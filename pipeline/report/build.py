"""Assemble the report from the results: ``OUTPUT_DIR/report.md``, ``OUTPUT_DIR/report.html``
and the plots in ``OUTPUT_DIR/report/``."""

from __future__ import annotations

from pathlib import Path

from fvcore.common.config import CfgNode

from ... import __version__
from ..config import MOCO_OPTS
from .document import Block, Code, Heading, Image, Paragraph, Table, to_html, to_markdown
from .plots import plot_detection, plot_knn, plot_training
from .results import BACKBONE_LABELS, CLASSIFICATION_COLUMNS, DETECTION_METRICS, Results

TITLE = "unimoco pipeline report"


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


def detection_table(results: Results) -> Table:
    """AP / AP50 / AP75 per task and backbone, with the AP gained over random init."""
    tasks = list(results.detection[results.backbones[0]])
    header = ["backbone"]
    for task in tasks:
        label = {"bbox": "box", "segm": "mask"}.get(task, task) + " " if len(tasks) > 1 else ""
        header += [f"{label}{metric}" for metric in DETECTION_METRICS]
    baseline = results.detection.get("random")
    if baseline is not None:
        header.append("AP vs random")
    rows = []
    for name in results.backbones:
        values = results.detection[name]
        row = [BACKBONE_LABELS[name]]
        row += [_number(values[task][metric]) for task in tasks for metric in DETECTION_METRICS]
        if baseline is not None:
            gain = _difference(values[tasks[0]]["AP"], baseline[tasks[0]]["AP"])
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
    rows += [
        ["eval (knn, lincls)", "the pretraining config", _pairs(cfg.EVAL.OPTS)],
        ["detect", _short_path(cfg.DETECT.CONFIG_FILE), _pairs(cfg.DETECT.OPTS)],
    ]
    return Table(["stage", "config file", "overrides"], rows)


def headline(results: Results) -> str:
    """One sentence: the detection AP of each backbone, and what pretraining bought."""
    task = next(iter(results.detection[results.backbones[0]]))
    ap = {name: results.detection[name][task]["AP"] for name in results.backbones}
    parts = [f"{BACKBONE_LABELS[name]} {_number(value)}" for name, value in ap.items()]
    text = f"Detection AP on {results.detection_dataset}: " + ", ".join(parts) + "."
    if "random" in ap:
        gain = _difference(ap[results.backbones[0]], ap["random"])
        text += f" Pretraining changed AP by {gain} points over random initialisation."
    return text


def build_blocks(results: Results, cfg: CfgNode, plot_dir: Path) -> list[Block]:
    """The report's content, top to bottom."""
    blocks: list[Block] = [
        Paragraph(headline(results)),
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
    blocks += [
        Heading(f"Detection ({results.detection_dataset})"),
        detection_table(results),
        Image(plot_detection(results, plot_dir / "detection_ap.png"), "detection AP per backbone"),
        Heading("Pretraining"),
    ]
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
