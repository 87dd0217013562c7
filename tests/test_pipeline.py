"""unimoco pipeline end to end on tiny settings: every job runs, the report's tables hold numbers,
the HTML page needs no other file, a re-run skips finished jobs, a changed recipe or --from
reruns exactly the jobs after it; bad configs fail early naming the key."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
import yaml

import unimoco.cli
from unimoco.pipeline import command
from unimoco.pipeline.report.plots import UNIFORM_LABEL, plot_training, training_figure
from unimoco.pipeline.report.results import Results

DEMO = Path(__file__).resolve().parents[1] / "configs" / "pipeline" / "shapes_demo.yaml"
BACKBONES = ["pretrained", "random", "supervised", "moco"]
PRETRAINED = ["pretrained", "supervised", "moco"]
JOBS = [
    *(("pretrain", name) for name in PRETRAINED),
    *(("eval", name) for name in BACKBONES),
    *(("convert", name) for name in PRETRAINED),
    *(("detect", name) for name in BACKBONES),
]
# The demo's recipe (through _BASE_), shrunk: a few pretraining steps on 32-px shapes, a few
# detection iterations on 64-px scenes, every baseline.
TINY = """
_BASE_: {demo}
OUTPUT_DIR: {out}
PRETRAIN:
  OPTS: [EVAL.KNN_PERIOD, 1, DATA.ROOT, {cache}, DATA.SHAPES.NUM_TRAIN, 64, DATA.SHAPES.NUM_VAL, 20,
         DATA.SHAPES.IMAGE_SIZE, 32, MOCO.K, 16, SOLVER.BATCH_SIZE, 16, SOLVER.EPOCHS, 2,
         EVAL.KNN_K, 10, DATA.NUM_WORKERS, 0, LOG.PERIOD, 1, LOG.TENSORBOARD, False]
EVAL:
  OPTS: [LINCLS.MODE, fast, LINCLS.EPOCHS, 2, LINCLS.BASE_LR, 1.0]
DETECT:
  OPTS: [DATASETS.SHAPES.ROOT, {cache}, DATASETS.SHAPES.NUM_TRAIN, 4, DATASETS.SHAPES.NUM_TEST, 4,
         DATASETS.SHAPES.IMAGE_SIZE, 64, INPUT.MIN_SIZE_TRAIN, "(64,)", INPUT.MAX_SIZE_TRAIN, 64,
         INPUT.MIN_SIZE_TEST, 64, INPUT.MAX_SIZE_TEST, 64, SOLVER.IMS_PER_BATCH, 2,
         SOLVER.MAX_ITER, 4, SOLVER.STEPS, "(3,)", SOLVER.WARMUP_ITERS, 1,
         MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, 8, TEST.PRECISE_BN.NUM_ITER, 1,
         DATALOADER.NUM_WORKERS, 0]
BASELINES: [random, supervised, moco]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny pipeline, run once for the module (one thread: the ops are tiny)."""
    root = tmp_path_factory.mktemp("pipeline")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(demo=DEMO, out=root / "out", cache=root / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert command.main(["--config-file", str(config)]) == 0
    yield config, root / "out"
    torch.set_num_threads(threads)


@pytest.fixture
def calls(monkeypatch):
    """The subcommands the pipeline calls from now on (they still run)."""
    seen: list[str] = []
    real = unimoco.cli.main

    def spy(argv):
        seen.append(argv[0])
        return real(argv)

    monkeypatch.setattr(unimoco.cli, "main", spy)
    return seen


def _records(out: Path) -> dict[tuple[str, str], dict]:
    return {
        (stage, name): json.loads((out / stage / name / "stage.json").read_text())
        for stage, name in JOBS
    }


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cells (header first, separator dropped)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|- "):
                current.append([cell.strip() for cell in line.strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_report_has_every_table_filled(run):
    _, out = run
    markdown = (out / "report.md").read_text()
    assert "n/a" not in markdown and "nan" not in markdown.lower()
    tables = _tables(markdown)
    classification, detection = tables[0], tables[1]
    assert classification[0] == [
        "backbone",
        "kNN top-1",
        "kNN top-5",
        "linear top-1",
        "linear top-5",
    ]
    assert detection[0] == ["backbone", "AP", "AP50", "AP75", "AP vs random"]
    for table in (classification, detection):
        assert [row[0] for row in table[1:]] == [
            "pretrained (ours)",
            "random init",
            "supervised (all labels)",
            "MoCo (0 % labels)",
        ]
        for row in table[1:]:
            for cell in row[1:]:
                assert (
                    cell == "—" and row[0] == "random init" or re.fullmatch(r"[+-]?\d+\.\d\d", cell)
                )
    stage_table = next(t for t in tables if t[0] == ["stage", "backbone", "wall time"])
    assert len(stage_table) == 2 + len(JOBS) and stage_table[-1][0] == "total"
    for name in ("training.png", "knn.png", "detection_ap.png"):
        assert (out / "report" / name).read_bytes().startswith(b"\x89PNG"), name
        assert f"](report/{name})" in markdown
    # Every job left its resolved config and a record whose outputs exist.
    for (stage, name), record in _records(out).items():
        folder = out / stage / name
        assert record["hash"] and (folder / "stage_config.yaml").is_file()
        assert all((folder / path).exists() for path in record["outputs"].values())
    # The final tables are printed (and logged).
    log = (out / "pipeline.log").read_text()
    assert "| pretrained (ours)" in log and log.rstrip().endswith("(and report.md)")


def test_moco_baseline_pretrains_the_same_recipe_without_labels(run):
    _, out = run
    configs = {
        name: yaml.safe_load((out / "pretrain" / name / "stage_config.yaml").read_text())
        for name in PRETRAINED
    }
    ratios = {name: config["DATA"]["LABEL_RATIO"] for name, config in configs.items()}
    assert ratios == {"pretrained": 0.1, "supervised": 1.0, "moco": 0.0}
    assert configs["moco"]["LOSS"] == configs["pretrained"]["LOSS"]
    for config in configs.values():
        del config["DATA"]["LABEL_RATIO"], config["LOSS"], config["OUTPUT_DIR"]
    assert configs["moco"] == configs["pretrained"]
    detect = (out / "detect" / "moco" / "stage_config.yaml").read_text()
    assert f"WEIGHTS: {out / 'convert' / 'moco' / 'backbone.pkl'}" in detect
    tables = _tables((out / "report.md").read_text())
    recipes = next(t for t in tables if t[0] == ["stage", "config file", "overrides"])
    assert ["pretrain (moco)", "the pretraining config"] in [row[:2] for row in recipes]


def _uniform_line(results: Results):
    """The dashed uniform-similarity line of the loss panel, or None."""
    fig = training_figure(results)
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() == UNIFORM_LABEL]
    plt.close(fig)
    assert len(lines) <= 1
    return lines[0] if lines else None


def test_loss_plot_draws_the_uniform_similarity_value_per_step(tmp_path):
    # UniCon's value grows as the label queue fills: log(1 + N_neg * N_pos) is not constant.
    uniform = [2.0, 2.5, 3.0]
    history = [
        {"step": step, "loss": loss, "lr": 0.1, "loss_contrast": loss, "loss_vs_uniform": loss / u}
        for step, loss, u in zip((10, 20, 30), (2.2, 2.0, 1.5), uniform)
    ]
    line = _uniform_line(Results(["pretrained"], history=history))
    assert line is not None and line.get_linestyle() == "--"
    assert list(line.get_xdata()) == [10, 20, 30]
    assert list(line.get_ydata()) == pytest.approx(uniform)
    assert plot_training(Results(["pretrained"], history=history), tmp_path / "t.png").is_file()


def test_loss_plot_of_an_older_history_has_no_uniform_line(tmp_path):
    history = [{"step": step, "loss": 3.0 / step, "lr": 0.1} for step in (1, 2, 3)]
    assert _uniform_line(Results(["pretrained"], history=history)) is None
    assert plot_training(Results(["pretrained"], history=history), tmp_path / "t.png").is_file()


def test_the_pipeline_history_gives_the_uniform_line(run):
    _, out = run
    lines = (out / "pretrain" / "pretrained" / "metrics.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    line = _uniform_line(Results(["pretrained"], history=history))
    assert line is not None and all(value > 0 for value in line.get_ydata())


class _Checker(HTMLParser):
    """Collects problems: unbalanced tags, and any reference to another file or the network."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:image/png;base64,"):
                self.problems.append(f"<{tag} {key}={attrs[key][:40]!r}>")
        if tag == "img":
            self.images += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")


def test_html_report_is_self_contained_and_valid(run):
    _, out = run
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.problems == [] and checker.stack == []
    assert checker.images == 3
    # The inlined images are the PNGs on disk.
    assert page.count("data:image/png;base64,iVBORw0KGgo") == 3


def test_rerun_skips_finished_jobs(run, calls):
    config, out = run
    before = (out / "report.html").stat().st_mtime_ns
    assert command.main(["--config-file", str(config)]) == 0
    assert calls == []
    assert (out / "report.html").stat().st_mtime_ns == before
    log = (out / "pipeline.log").read_text().split("jobs into")[-1]
    assert log.count("skipped") == len(JOBS) + 1


def test_changed_detection_recipe_reruns_only_detection(run, calls):
    config, out = run
    before = _records(out)
    assert command.main(["--config-file", str(config), "DETECT.SOLVER.MAX_ITER", "5"]) == 0
    assert calls == ["detect"] * len(BACKBONES)
    after = _records(out)
    for job in JOBS:
        assert (after[job] == before[job]) == (job[0] != "detect"), job
    assert (
        json.loads((out / "detect" / "random" / "final_metrics.json").read_text())["max_iter"] == 5
    )


def test_from_stage_reruns_it_and_every_later_one(run, calls):
    config, out = run
    before = _records(out)
    args = ["--config-file", str(config), "--from", "convert", "DETECT.SOLVER.MAX_ITER", "5"]
    assert command.main(args) == 0
    assert calls == ["convert"] * len(PRETRAINED) + ["detect"] * len(BACKBONES)
    after = _records(out)
    for job in JOBS:
        rerun = job[0] in ("convert", "detect")
        assert (after[job]["finished"] > before[job]["finished"]) == rerun, job
        assert after[job]["hash"] == before[job]["hash"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["PRETRAIN.SOLVER.EPOCHZ", "2"], "SOLVER.EPOCHZ"),
        (["DETECT.SOLVER.MAX_ITERS", "2"], "SOLVER.MAX_ITERS"),
        (["BASELINE", "[]"], "BASELINE"),
        (["BASELINES", "['imagenet']"], "BASELINES"),
        (["PRETRAIN.MODEL.CIFAR_STEM", "True"], "MODEL.CIFAR_STEM"),
        (["PRETRAIN.MODEL.ARCH", "resnet50"], "MODEL.RESNETS.DEPTH"),
        (["DETECT.CONFIG_FILE", "nowhere.yaml"], "DETECT.CONFIG_FILE"),
        (["PRETRAIN.DATA.NAME", "imagefolder"], "DATA.VAL_ROOT"),
    ],
)
def test_bad_config_fails_early_naming_the_key(tmp_path, capsys, overrides, message):
    argv = ["--config-file", str(DEMO), "OUTPUT_DIR", str(tmp_path / "out"), *overrides]
    assert command.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
