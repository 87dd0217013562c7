"""From a pipeline config to its jobs, in stage order, with every stage config resolved (and
checked) before anything runs: a bad key fails in seconds, not after pretraining."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from fvcore.common.config import CfgNode

from .config import DETECT_TASK, MOCO_OPTS, PipelineConfigError, transfer_tasks
from .jobs import BACKBONE_PKL, Job, run_convert, run_detect, run_eval, run_pretrain

PRETRAINED = "pretrained"


def build_jobs(cfg: CfgNode, report_run: Callable[[Job], dict[str, str]]) -> list[Job]:
    """The jobs of ``cfg``: pretrain, eval, convert and every transfer task for the pretrained
    backbone and each baseline, then the report (``report_run`` builds it)."""
    out = Path(cfg.OUTPUT_DIR)
    pretrain_opts = [str(v) for v in cfg.PRETRAIN.OPTS]
    base = _pretrain_cfg(cfg, pretrain_opts, "PRETRAIN.OPTS")
    tasks = transfer_tasks(cfg)
    for task, node in tasks.items():
        _check_transferable(task, node, base)
    _check_evaluable(cfg, base)
    recipes = {PRETRAINED: (pretrain_opts, "PRETRAIN.OPTS")}
    if "supervised" in cfg.BASELINES:
        supervised = pretrain_opts + [str(v) for v in cfg.SUPERVISED.OPTS]
        recipes["supervised"] = (supervised, "SUPERVISED.OPTS")
    if "moco" in cfg.BASELINES:
        recipes["moco"] = (pretrain_opts + list(MOCO_OPTS), "the moco baseline's overrides")

    pretrain = {}
    for name, (opts, key) in recipes.items():
        folder = out / "pretrain" / name
        text = _pretrain_cfg(cfg, opts + ["OUTPUT_DIR", str(folder)], key).dump()
        pretrain[name] = Job("pretrain", name, folder, text, run_pretrain)

    backbones = backbone_names(cfg)
    evals = []
    if cfg.EVAL.KNN or cfg.EVAL.LINCLS:
        run = functools.partial(run_eval, knn=cfg.EVAL.KNN, lincls=cfg.EVAL.LINCLS)
        eval_opts = pretrain_opts + [str(v) for v in cfg.EVAL.OPTS]
        for name in backbones:
            folder = out / "eval" / name
            text = _pretrain_cfg(cfg, eval_opts + ["OUTPUT_DIR", str(folder)], "EVAL.OPTS").dump()
            inputs = [pretrain[name]] if name in pretrain else []
            evals.append(Job("eval", name, folder, text, run, inputs))

    converts = {}
    for name, job in pretrain.items():
        folder = out / "convert" / name
        text = f"INPUT: {job.folder}\nOUTPUT: {folder / BACKBONE_PKL}\nFORMAT: detectron2\n"
        converts[name] = Job("convert", name, folder, text, run_convert, [job])

    detects = []
    for task, node in tasks.items():
        for name in backbones:
            folder = transfer_folder(out, task, name)
            weights = str(converts[name].folder / BACKBONE_PKL) if name in converts else ""
            opts = [str(v) for v in node.OPTS] + ["MODEL.WEIGHTS", weights]
            text = _transfer_cfg(task, node, opts + ["OUTPUT_DIR", str(folder)]).dump()
            inputs = [converts[name]] if name in converts else []
            job_name = name if task == DETECT_TASK else f"{task}/{name}"
            detects.append(Job("detect", job_name, folder, text, run_detect, inputs))

    jobs = [*pretrain.values(), *evals, *converts.values(), *detects]
    report = Job("report", "all", out / "report", cfg.dump(), report_run, list(jobs))
    return [*jobs, report]


def transfer_folder(output_dir: Path, task: str, backbone: str) -> Path:
    """Where a transfer task's job for one backbone writes: ``detect/<backbone>`` for DETECT,
    ``transfer/<task>/<backbone>`` for a TRANSFER task."""
    if task == DETECT_TASK:
        return output_dir / "detect" / backbone
    return output_dir / "transfer" / task / backbone


def backbone_names(cfg: CfgNode) -> list[str]:
    """The pretrained backbone first, then the baselines, in the config's order."""
    return [PRETRAINED, *cfg.BASELINES]


def _pretrain_cfg(cfg: CfgNode, opts: list[str], key: str) -> CfgNode:
    from unimoco.pretrain.config import ConfigError, load_cfg

    try:
        return load_cfg(cfg.PRETRAIN.CONFIG_FILE, opts)
    except ConfigError as err:
        raise PipelineConfigError(f"PRETRAIN.CONFIG_FILE with {key}: {err}") from None


def _transfer_cfg(task: str, node: CfgNode, opts: list[str]) -> CfgNode:
    from unimoco.transfer.config import DetectionConfigError, load_detection_cfg

    section = "DETECT" if task == DETECT_TASK else f"TRANSFER.{task}"
    try:
        return load_detection_cfg(node.CONFIG_FILE, opts)
    except DetectionConfigError as err:
        raise PipelineConfigError(f"{section}.CONFIG_FILE with {section}.OPTS: {err}") from None


def _check_evaluable(cfg: CfgNode, pretrain_cfg: CfgNode) -> None:
    """kNN and linear evaluation need a held-out split; an ImageFolder has one only when named."""
    needs_val = cfg.EVAL.KNN or cfg.EVAL.LINCLS
    if needs_val and pretrain_cfg.DATA.NAME == "imagefolder" and not pretrain_cfg.DATA.VAL_ROOT:
        raise PipelineConfigError(
            "EVAL.KNN / EVAL.LINCLS need a held-out split but PRETRAIN: DATA.VAL_ROOT is empty; "
            "set PRETRAIN.DATA.VAL_ROOT, or EVAL.KNN False EVAL.LINCLS False"
        )


def _check_transferable(task: str, node: CfgNode, pretrain_cfg: CfgNode) -> None:
    """The pretrained ResNet must fit the transfer model's: same depth, detectron2's stem."""
    if pretrain_cfg.MODEL.CIFAR_STEM:
        raise PipelineConfigError(
            "PRETRAIN: MODEL.CIFAR_STEM = True, but detectron2's ResNet has the 7x7/2 stem with "
            "max-pool; pretrain with MODEL.CIFAR_STEM False to transfer"
        )
    depth = int(pretrain_cfg.MODEL.ARCH.removeprefix("resnet"))
    transfer_depth = _transfer_cfg(task, node, [str(v) for v in node.OPTS]).MODEL.RESNETS.DEPTH
    if depth != transfer_depth:
        section = "DETECT" if task == DETECT_TASK else f"TRANSFER.{task}"
        raise PipelineConfigError(
            f"PRETRAIN: MODEL.ARCH = {pretrain_cfg.MODEL.ARCH} but {section}: "
            f"MODEL.RESNETS.DEPTH = {transfer_depth}; expected the same ResNet depth"
        )
