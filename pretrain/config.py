"""Pretraining config: fvcore ``CfgNode`` defaults (MoCo v2), YAML with ``_BASE_``, overrides.

Config files and ``KEY VALUE`` command-line overrides follow detectron2's conventions; keys
that are not in the defaults are errors that name the key and the file they came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import yaml
from fvcore.common.config import CfgNode

from ..configs import ConfigNode, UnknownConfigError, resolve_config_file
from .config_checks import ConfigError, FloatLikeMixin, check_config

_C = CfgNode()

_C.OUTPUT_DIR = "output/pretrain"
_C.SEED = 0

_C.DATA = CfgNode()
# imagefolder | shapes | cifar10 | cifar100 | stl10 | digits (scikit-learn's UCI digits) |
# fashion_mnist (the four IDX files; DATA.ROOT "" = Debian's /usr/share/datasets/fashion-mnist)
_C.DATA.NAME = "imagefolder"
# For imagefolder, the folder whose subfolders are the classes (ImageNet: its train/). For
# cifar/stl10, the torchvision root. For shapes, the cache folder ("" = ~/.cache/unimoco/shapes).
_C.DATA.ROOT = ""
# Fraction of labeled images, class-balanced and seeded: 0 = MoCo, 1 = fully supervised.
_C.DATA.LABEL_RATIO = 0.0
# File naming the labeled images (one path relative to DATA.ROOT per line); replaces LABEL_RATIO.
_C.DATA.LABELED_LIST = ""
_C.DATA.NUM_WORKERS = 4
# Held-out split for evaluation (kNN monitor); "" = none.
_C.DATA.VAL_ROOT = ""
# Stop the run when more than this fraction of the images fail to decode.
_C.DATA.MAX_BAD_FRACTION = 0.01
# Where images are decoded and augmented: cpu (PIL in the loader workers; the reference) | gpu
# (workers read file bytes; JPEGs are decoded in batches and both crops augmented on the
# training device with per-sample parameters, overlapped with the model step).
_C.DATA.PIPELINE = "cpu"

# Generated "shapes" data (DATA.NAME shapes): deterministic by DATA.SHAPES.SEED.
_C.DATA.SHAPES = CfgNode()
_C.DATA.SHAPES.NUM_TRAIN = 2000
_C.DATA.SHAPES.NUM_VAL = 500
_C.DATA.SHAPES.IMAGE_SIZE = 64
_C.DATA.SHAPES.SEED = 0

# scikit-learn's 8x8 handwritten digits (DATA.NAME digits), upsampled to SIZE px; the stratified
# train/test split is fixed by SPLIT_SEED (not SEED), so runs of several seeds share it.
_C.DATA.DIGITS = CfgNode()
_C.DATA.DIGITS.SIZE = 32
_C.DATA.DIGITS.NUM_TEST = 360
_C.DATA.DIGITS.SPLIT_SEED = 0

# Fashion-MNIST (DATA.NAME fashion_mnist), resized from 28 to SIZE px. NUM_TRAIN / NUM_TEST keep a
# class-balanced subset of the published split (a multiple of 10; 0 = all 60,000 / 10,000), drawn
# by SUBSET_SEED (not SEED), so runs of several seeds share it.
_C.DATA.FASHION_MNIST = CfgNode()
_C.DATA.FASHION_MNIST.SIZE = 32
_C.DATA.FASHION_MNIST.NUM_TRAIN = 0
_C.DATA.FASHION_MNIST.NUM_TEST = 0
_C.DATA.FASHION_MNIST.SUBSET_SEED = 0

_C.INPUT = CfgNode()
_C.INPUT.SIZE = 224
# v1 | v2 (docs/methods.md §1)
_C.INPUT.AUG = "v2"
_C.INPUT.CROP_SCALE = (0.2, 1.0)
# Random horizontal flip of both crops (off for data whose classes flips change: digits, text).
_C.INPUT.HFLIP = True

_C.MODEL = CfgNode()
# resnet18 | resnet34 | resnet50 | resnet101
_C.MODEL.ARCH = "resnet50"
# 3x3 stride-1 first conv and no max-pool, for 32-px images.
_C.MODEL.CIFAR_STEM = False
# fc (MoCo v1) | mlp (MoCo v2)
_C.MODEL.HEAD = "mlp"
_C.MODEL.DIM = 128
_C.MODEL.CHANNELS_LAST = False
# torch.compile the query and key encoders (first steps pay the compilation).
_C.MODEL.COMPILE = False

_C.MOCO = CfgNode()
_C.MOCO.K = 65536
_C.MOCO.M = 0.999
_C.MOCO.T = 0.2
# Shuffle BN (across ranks under torchrun). On one process: BN statistics over this many
# sub-batches with an in-batch shuffle of the keys (split BN); 1 turns it off.
_C.MOCO.SHUFFLE_BN = True
_C.MOCO.BN_SPLITS = 8

_C.LOSS = CfgNode()
# unicon (the paper's: positives = own key + queued keys of the same label, all pairs in one log)
# | unicon_mean (the same positives, their losses averaged as SupCon does) | infonce (MoCo)
_C.LOSS.NAME = "unicon"
# Labels enter the label queue only after this many epochs: until then the queue's labels stay -1
# and UniCon is InfoNCE (the own key is the only positive). From scratch with many labels, UniCon
# is lowest when all keys collapse to one point (docs/methods.md §2); learning instances first
# kept a fully labeled digits run off that point, at a lower kNN by epoch 15 (docs/benchmarks.md).
_C.LOSS.LABEL_WARMUP_EPOCHS = 0
# Symmetric loss (MoCo's CIFAR demo, MoCo v3): each crop is also the other's query, the loss is the
# mean of both directions and both key batches enter the queue; twice the encoder work per step.
_C.LOSS.SYMMETRIC = False

_C.CO2 = CfgNode()
_C.CO2.ENABLED = False
# alpha = 1 and tau_c = 0.05 are lightly's defaults; the CO2 paper's could not be confirmed here.
_C.CO2.ALPHA = 1.0
_C.CO2.T = 0.05

_C.SOLVER = CfgNode()
_C.SOLVER.EPOCHS = 200
# Global batch (all ranks together).
_C.SOLVER.BATCH_SIZE = 256
# Learning rate per 256 images; the lr in force is BASE_LR * BATCH_SIZE / 256.
_C.SOLVER.BASE_LR = 0.03
# sgd (MoCo v1/v2) | adamw (MoCo v3; BASE_LR is then AdamW's lr per 256 images)
_C.SOLVER.OPTIMIZER = "sgd"
# SGD's momentum (unused by AdamW).
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 1e-4
# cosine | step
_C.SOLVER.SCHEDULE = "cosine"
# Epochs at which a step schedule multiplies the lr by GAMMA.
_C.SOLVER.STEPS = (120, 160)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_EPOCHS = 0
# bf16 autocast on GPU (the loss is computed in fp32 either way).
_C.SOLVER.AMP = True
# Stop after this many steps (0 = run all epochs); for smoke tests and benchmarks.
_C.SOLVER.MAX_STEPS = 0
# A step with a non-finite loss is skipped (no update, no enqueue); this many in a row stop the
# run, leaving the last checkpoint as it was.
_C.SOLVER.MAX_NONFINITE = 5

_C.CHECKPOINT = CfgNode()
# A checkpoint every epoch and, when > 0, every this many steps.
_C.CHECKPOINT.PERIOD_STEPS = 0

_C.LOG = CfgNode()
_C.LOG.PERIOD = 20
_C.LOG.TENSORBOARD = True
# tqdm bar: auto (when stderr is a terminal) | on | off
_C.LOG.PROGRESS = "auto"
# Collapse monitor: warn once when the contrastive loss stays within PLATEAU_TOLERANCE (relative)
# of its uniform-similarity value for PLATEAU_WINDOWS log periods in a row after the warm-up
# (0 windows = never warn; the ratio and the key cosine are logged either way).
_C.LOG.PLATEAU_TOLERANCE = 0.02
_C.LOG.PLATEAU_WINDOWS = 5

_C.EVAL = CfgNode()
# Online kNN monitor every this many epochs on DATA.VAL_ROOT (0 = off).
_C.EVAL.KNN_PERIOD = 0
_C.EVAL.KNN_K = 200
_C.EVAL.KNN_T = 0.1
# Images per process and batch when computing features or evaluating a classifier.
_C.EVAL.BATCH_SIZE = 256

# Linear protocol (MoCo): frozen backbone in eval mode, new fc ~ N(0, 0.01), SGD, step lr.
_C.LINCLS = CfgNode()
# standard (augmented crops every epoch; published numbers) | fast (features cached once, no
# augmentation; for small data and quick sweeps)
_C.LINCLS.MODE = "standard"
_C.LINCLS.EPOCHS = 100
# Global batch (all ranks together).
_C.LINCLS.BATCH_SIZE = 256
# Learning rate per 256 images (MoCo: 30 at batch 256).
_C.LINCLS.BASE_LR = 30.0
_C.LINCLS.MOMENTUM = 0.9
_C.LINCLS.WEIGHT_DECAY = 0.0
# Epochs at which the lr is multiplied by GAMMA.
_C.LINCLS.STEPS = (60, 80)
_C.LINCLS.GAMMA = 0.1
# RandomResizedCrop scale of the training crops (torchvision's default, as MoCo).
_C.LINCLS.CROP_SCALE = (0.08, 1.0)

# Semi-supervised fine-tuning of the whole network on a labeled fraction (SimCLR-style 1 %/10 %).
_C.SEMISUP = CfgNode()
# Class-balanced fraction of the training images kept, seeded by SEED (e.g. 0.01, 0.1).
_C.SEMISUP.LABEL_RATIO = 0.1
# File naming the labeled images (DATA.LABELED_LIST's format); replaces LABEL_RATIO.
_C.SEMISUP.LABELED_LIST = ""
# SimCLR fine-tunes 60 epochs on 1 % of ImageNet and 30 on 10 %.
_C.SEMISUP.EPOCHS = 30
_C.SEMISUP.BATCH_SIZE = 256
# Learning rates per 256 images: the pretrained backbone moves much less than the new head.
_C.SEMISUP.BACKBONE_LR = 0.01
_C.SEMISUP.HEAD_LR = 0.1
_C.SEMISUP.MOMENTUM = 0.9
_C.SEMISUP.WEIGHT_DECAY = 0.0
# cosine | step (multiply by GAMMA at STEPS epochs)
_C.SEMISUP.SCHEDULE = "cosine"
_C.SEMISUP.STEPS = (12, 24)
_C.SEMISUP.GAMMA = 0.1
_C.SEMISUP.CROP_SCALE = (0.08, 1.0)


# ``unimoco bench``: timing of the data, the model step and both together.
_C.BENCH = CfgNode()
_C.BENCH.WARMUP_STEPS = 3
# Peak FLOP/s of the device for the model FLOP utilisation, in TFLOP/s; 0 = H100 bf16 dense
# (989) on CUDA, and no utilisation reported on the CPU.
_C.BENCH.PEAK_TFLOPS = 0.0
# Without a DATA.ROOT: a generated JPEG folder of this many shapes images of IMAGE_SIZE px
# (made once, in the cache). Each epoch restarts the loader workers: keep several batches' worth.
_C.BENCH.NUM_IMAGES = 2048
_C.BENCH.IMAGE_SIZE = 256
# False times the step without the non-finite-loss guard (SOLVER.MAX_NONFINITE), to measure
# what its one host synchronisation per step costs; training always keeps the guard.
_C.BENCH.STEP_GUARD = True


class PretrainCfgNode(FloatLikeMixin, ConfigNode):
    """The pretraining config's node: ``_BASE_`` may name a built-in config, and a whole number
    is taken where the default is a float."""


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults (MoCo v2, UniCon loss, no labels), whose ``_BASE_`` may name
    a built-in config."""
    return PretrainCfgNode(_C)


def load_cfg(config_file: str | None = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Defaults, merged with ``config_file`` (``_BASE_`` chains allowed), then KEY VALUE pairs."""
    cfg = get_cfg()
    if config_file:
        try:
            path = resolve_config_file(config_file)
        except UnknownConfigError as err:
            raise ConfigError(str(err)) from None
        try:
            cfg.merge_from_file(str(path))
        except (KeyError, AssertionError, ValueError, TypeError, yaml.YAMLError) as err:
            raise ConfigError(f"{config_file}: {err}") from None
    if len(overrides) % 2:
        raise ConfigError(
            f"overrides must be KEY VALUE pairs; got an odd number: {' '.join(overrides)}"
        )
    try:
        cfg.merge_from_list(list(overrides))
    except (KeyError, AssertionError, ValueError, TypeError) as err:  # TypeError: "{[]: 1}"
        raise ConfigError(f"command-line override: {err}") from None
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def validate_cfg(cfg: CfgNode) -> None:
    """The ranges of the keys and the relations between them (pretrain/config_checks.py); the
    error names the key, its value and what is valid."""
    check_config(cfg)


def config_hash(cfg: CfgNode) -> str:
    """A short stable hash of the resolved config, to tell whether two runs share a recipe."""
    return hashlib.sha256(cfg.dump(sort_keys=True).encode()).hexdigest()[:16]
