"""Pipeline config: fvcore ``CfgNode`` YAML with ``_BASE_`` that points at a pretraining and a
detection config and carries per-stage overrides; errors name the key.

Command-line overrides address the pipeline's own keys (``OUTPUT_DIR out``) or, with a stage
prefix, any key of a stage's config (``PRETRAIN.SOLVER.EPOCHS 2``, ``DETECT.SOLVER.MAX_ITER 50``,
``EVAL.LINCLS.EPOCHS 5``): those are appended to that stage's ``OPTS``.
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
        for section in _STAGE_FILES:
            value = (loaded.get(section) or {}).get("CONFIG_FILE")
            if value:
                loaded[section]["CONFIG_FILE"] = resolve_relative(value, filename)
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
# A detection config (unimoco detect): a path or a name, as for PRETRAIN.CONFIG_FILE.
_C.DETECT.CONFIG_FILE = ""
_C.DETECT.OPTS = []

# The same evaluation and fine-tune from other starting points: random (randomly initialised
# backbone), supervised (pretrained on the same images with every label: UniCon with
# DATA.LABEL_RATIO 1.0) and moco (the same pretraining with no label: MOCO_OPTS). Each of the
# last two costs another pretraining run.
_C.BASELINES = ["random"]
_C.SUPERVISED = _PipelineCfgNode()
# Overrides of the pretraining config that make the supervised baseline.
_C.SUPERVISED.OPTS = ["DATA.LABEL_RATIO", 1.0, "LOSS.NAME", "unicon", "DATA.LABELED_LIST", ""]

_STAGE_SECTIONS = ("PRETRAIN", "EVAL", "DETECT", "SUPERVISED")


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
        if section in staged and rest and rest not in _C[section]:
            staged[section] += [rest, value]
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
    for section, opts in staged.items():
        cfg[section].OPTS = [str(v) for v in cfg[section].OPTS] + opts
    for section in _STAGE_FILES:
        cfg[section].CONFIG_FILE = _existing_file(cfg, section)
    unknown = [name for name in cfg.BASELINES if name not in BASELINE_NAMES]
    if unknown:
        raise PipelineConfigError(
            f"BASELINES = {list(cfg.BASELINES)}: unknown {unknown}; expected names from "
            f"{', '.join(BASELINE_NAMES)}"
        )
    for section in _STAGE_SECTIONS:
        if len(cfg[section].OPTS) % 2:
            raise PipelineConfigError(
                f"{section}.OPTS = {list(cfg[section].OPTS)}: expected KEY VALUE pairs"
            )
    cfg.freeze()
    return cfg


def _existing_file(cfg: CfgNode, section: str) -> str:
    value = cfg[section].CONFIG_FILE
    if not value:
        raise PipelineConfigError(f"{section}.CONFIG_FILE is empty; expected a config file")
    try:
        return str(resolve_config_file(value).resolve())
    except UnknownConfigError as err:
        raise PipelineConfigError(f"{section}.CONFIG_FILE: {err}") from None
