"""Pipeline config: fvcore ``CfgNode`` YAML with ``_BASE_`` that points at a pretraining config
and one or more transfer configs (``DETECT`` and the named tasks under ``TRANSFER``) and carries
per-stage overrides; errors name the key.

Command-line overrides address the pipeline's own keys (``OUTPUT_DIR out``) or, with a stage
prefix, any key of a stage's config (``PRETRAIN.SOLVER.EPOCHS 2``, ``DETECT.SOLVER.MAX_ITER 50``,
``TRANSFER.voc_seg.SOLVER.MAX_ITER 50``, ``EVAL.LINCLS.EPOCHS 5``): those are appended to that
stage's (or task's) ``OPTS``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fvcore.common.config import CfgNode

from ..configs import BuiltinBaseMixin, UnknownConfigError, resolve_config_file, resolve_relative

BASELINE_NAMES = ("random", "supervised", "moco")
# Overrides of the pretraining config that make the moco baseline: no labels, so the label
# queue has nothing to add (UniCon reduces to MoCo's loss); the loss stays the config's.
MOCO_OPTS = ("DATA.LABEL_RATIO", "0.0", "DATA.LABELED_LIST", "")
_STAGE_FILES = ("PRETRAIN", "DETECT")


class _PipelineCfgNode(BuiltinBaseMixin, CfgNode):
    """A ``CfgNode`` whose stage config paths in a YAML file are relative to that file (as
    ``_BASE_`` is) or name built-in configs, at every level of a ``_BASE_`` chain."""

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict:
        loaded = super().load_yaml_with_base(filename, allow_unsafe)
        stages = [loaded.get(section) for section in _STAGE_FILES]
        stages += list((loaded.get("TRANSFER") or {}).values())
        for stage in stages:
            value = stage.get("CONFIG_FILE") if isinstance(stage, dict) else None
            if value:
                stage["CONFIG_FILE"] = resolve_relative(value, filename)
        return loaded


_C = _PipelineCfgNode()
_C.OUTPUT_DIR = "output/pipeline"

_C.PRETRAIN = _PipelineCfgNode()
# A pretraining config (unimoco pretrain): a path relative to the YAML file that names it (on the
# command line: to the current folder) or a built-in config's name (pretrain/shapes_demo).
_C.PRETRAIN.CONFIG_FILE = ""
# KEY VALUE overrides of that config, e.g. ["SOLVER.EPOCHS", 8].
_C.PRETRAIN.OPTS = []

# Evaluation of every backbone (pretrained and baselines) on the pretraining data's splits.
_C.EVAL = _PipelineCfgNode()
_C.EVAL.KNN = True
_C.EVAL.LINCLS = True
# Overrides of the pretraining config for unimoco knn / lincls (e.g. LINCLS.MODE fast).
_C.EVAL.OPTS = ["LINCLS.MODE", "fast"]

_C.DETECT = _PipelineCfgNode()
# A transfer config (unimoco detect: detection, segmentation, keypoints, VOC07 SVMs): a path or a
# name, as for PRETRAIN.CONFIG_FILE. Empty when every transfer task is under TRANSFER.
_C.DETECT.CONFIG_FILE = ""
_C.DETECT.OPTS = []

# More transfer tasks, each run from every backbone like DETECT, each a table of its own in the
# report: NAME: {CONFIG_FILE: ..., OPTS: [...]}, e.g.
#   TRANSFER:
#     voc_seg: {CONFIG_FILE: segmentation/voc_FCN_R_50_30k, OPTS: [DATASETS.ROOT, /data]}
_C.TRANSFER = _PipelineCfgNode(new_allowed=True)

# The same evaluation and fine-tune from other starting points: random (randomly initialised
# backbone), supervised (pretrained on the same images with every label: UniCon with
# DATA.LABEL_RATIO 1.0) and moco (the same pretraining with no label: MOCO_OPTS). Each of the
# last two costs another pretraining run.
_C.BASELINES = ["random"]
_C.SUPERVISED = _PipelineCfgNode()
# Overrides of the pretraining config that make the supervised baseline.
_C.SUPERVISED.OPTS = ["DATA.LABEL_RATIO", 1.0, "LOSS.NAME", "unicon", "DATA.LABELED_LIST", ""]

_STAGE_SECTIONS = ("PRETRAIN", "EVAL", "DETECT", "SUPERVISED")
# What DETECT is called among the transfer tasks (its jobs write to OUTPUT_DIR/detect/<backbone>).
DETECT_TASK = "detect"
_TASK_KEYS = {"CONFIG_FILE", "OPTS"}


class PipelineConfigError(ValueError):
    """A pipeline config file or override that does not fit; the message names the key."""


def get_pipeline_cfg() -> CfgNode:
    """A fresh copy of the pipeline defaults."""
    return _C.clone()


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Pipeline ``KEY VALUE`` pairs, and the stage-prefixed ones (``PRETRAIN.SOLVER.EPOCHS 2``)
    grouped by section with the prefix removed."""
    if len(overrides) % 2:
        raise PipelineConfigError(
            f"overrides must be KEY VALUE pairs; got an odd number: {' '.join(overrides)}"
        )
    own: list[str] = []
    staged: dict[str, list[str]] = {section: [] for section in _STAGE_SECTIONS}
    for key, value in zip(overrides[::2], overrides[1::2]):
        section, _, rest = key.partition(".")
        task, _, task_key = rest.partition(".")
        if section in staged and rest and rest not in _C[section]:
            staged[section] += [rest, value]
        elif section == "TRANSFER" and task_key and task_key not in _TASK_KEYS:
            staged.setdefault(f"TRANSFER.{task}", []).extend([task_key, value])
        else:
            own += [key, value]
    return own, staged


def load_pipeline_cfg(config_file: str, overrides: Sequence[str] = ()) -> CfgNode:
    """Defaults merged with ``config_file`` (``_BASE_`` allowed) and the overrides; stage
    config paths resolved to existing files."""
    try:
        path = resolve_config_file(config_file)
    except UnknownConfigError as err:
        raise PipelineConfigError(f"pipeline {err}") from None
    cfg = get_pipeline_cfg()
    try:
        cfg.merge_from_file(str(path))
    except (KeyError, AssertionError, ValueError) as err:
        raise PipelineConfigError(f"{config_file}: {err}") from None
    own, staged = split_overrides(overrides)
    try:
        cfg.merge_from_list(own)
    except (KeyError, AssertionError, ValueError) as err:
        raise PipelineConfigError(f"command-line override: {err}") from None
    tasks = transfer_tasks(cfg)
    for section, opts in staged.items():
        node = _stage_node(cfg, section)
        node.OPTS = [str(v) for v in node.OPTS] + opts
    cfg.PRETRAIN.CONFIG_FILE = _existing_file(cfg, "PRETRAIN")
    for name, node in tasks.items():
        key = "DETECT" if name == DETECT_TASK else f"TRANSFER.{name}"
        node.CONFIG_FILE = _existing_file(cfg, key)
    unknown = [name for name in cfg.BASELINES if name not in BASELINE_NAMES]
    if unknown:
        raise PipelineConfigError(
            f"BASELINES = {list(cfg.BASELINES)}: unknown {unknown}; expected names from "
            f"{', '.join(BASELINE_NAMES)}"
        )
    sections = [*_STAGE_SECTIONS, *(f"TRANSFER.{name}" for name in cfg.TRANSFER)]
    for section in sections:
        if len(_stage_node(cfg, section).OPTS) % 2:
            raise PipelineConfigError(
                f"{section}.OPTS = {list(_stage_node(cfg, section).OPTS)}: expected KEY VALUE pairs"
            )
    cfg.freeze()
    return cfg


def transfer_tasks(cfg: CfgNode) -> dict[str, CfgNode]:
    """The transfer tasks by name, DETECT first (when it names a config), then TRANSFER's in the
    config's order; each a node with CONFIG_FILE and OPTS. At least one is required."""
    tasks = {DETECT_TASK: cfg.DETECT} if cfg.DETECT.CONFIG_FILE else {}
    for name, node in cfg.TRANSFER.items():
        if not isinstance(node, CfgNode) or not set(node) <= _TASK_KEYS:
            found = sorted(node) if isinstance(node, CfgNode) else repr(node)
            raise PipelineConfigError(
                f"TRANSFER.{name} = {found}: expected a task with CONFIG_FILE and OPTS"
            )
        if name in (DETECT_TASK, "pretrain", "eval", "convert", "report") or "/" in name:
            raise PipelineConfigError(
                f"TRANSFER.{name}: the name is taken by a stage or holds '/'; pick another"
            )
        node.setdefault("CONFIG_FILE", "")
        node.setdefault("OPTS", [])
        tasks[name] = node
    if not tasks:
        raise PipelineConfigError(
            "DETECT.CONFIG_FILE is empty and TRANSFER has no task; expected a config file"
        )
    return tasks


def _stage_node(cfg: CfgNode, section: str) -> CfgNode:
    """The node of a section (``PRETRAIN``) or of a transfer task (``TRANSFER.voc_seg``)."""
    group, _, task = section.partition(".")
    if not task:
        return cfg[group]
    if task not in cfg.TRANSFER:
        raise PipelineConfigError(
            f"{section}: no such transfer task; TRANSFER has {sorted(cfg.TRANSFER) or 'none'}"
        )
    return cfg.TRANSFER[task]


def _existing_file(cfg: CfgNode, section: str) -> str:
    value = _stage_node(cfg, section).CONFIG_FILE
    if not value:
        raise PipelineConfigError(f"{section}.CONFIG_FILE is empty; expected a config file")
    try:
        return str(resolve_config_file(value).resolve())
    except UnknownConfigError as err:
        raise PipelineConfigError(f"{section}.CONFIG_FILE: {err}") from None
