"""Every constraint on a pretraining config, in one place: the valid values of each key (a
table) and the relations between keys, checked when the config is loaded, so that a bad value
ends in a :class:`ConfigError` naming the key, its value and what is valid, never in a
traceback halfway through a run. Also: whole numbers where the default is a float are taken as
floats (``MOCO.T 1`` means 1.0), before yacs's type check refuses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fvcore.common.config import CfgNode


class ConfigError(ValueError):
    """A config file or override that does not fit the defaults."""


@dataclass(frozen=True)
class Valid:
    """A test on one value, and what passes it in words (the end of the error message)."""

    test: Callable[[Any], bool]
    text: str

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` passes; a value the test cannot compare (a string in a list of
        numbers) does not."""
        try:
            return bool(self.test(value))
        except TypeError:
            return False


def one_of(*choices: str) -> Valid:
    return Valid(lambda v: v in choices, f"one of {', '.join(choices)}")


def at_least(bound: float, what: str = "a value") -> Valid:
    return Valid(lambda v: v >= bound, f"{what} >= {bound}")


def above(bound: float, what: str = "a value") -> Valid:
    return Valid(lambda v: v > bound, f"{what} > {bound}")


def within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Valid:
    """A value in the interval from ``low`` to ``high``, each end closed unless marked open."""

    def test(v: Any) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)

    brackets = ("(" if low_open else "[", ")" if high_open else "]")
    return Valid(test, f"a value in {brackets[0]}{low}, {high}{brackets[1]}")


def ascending(unit: str) -> Valid:
    """Points of a schedule (lr steps): non-negative and in ascending order."""
    return Valid(
        lambda v: all(e >= 0 for e in v) and list(v) == sorted(v),
        f"{unit} >= 0 in ascending order",
    )


def crop_scale() -> Valid:
    """RandomResizedCrop's area fractions (lo, hi)."""
    return Valid(
        lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "a pair (lo, hi) with 0 < lo <= hi <= 1"
    )


def balanced_subset(limit: int) -> Valid:
    return Valid(
        lambda v: v % 10 == 0 and 0 <= v <= limit,
        f"a multiple of 10 (the subset is class-balanced) from 10 to {limit}, or 0 for the "
        "whole split",
    )


POSITIVE = at_least(1, "an integer")
NON_NEGATIVE = at_least(0)
TEMPERATURE = above(0, "a temperature")
MOMENTUM = within(0, 1, high_open=True)

# The valid values of every key that has a limit.
RULES: dict[str, Valid] = {
    "SEED": NON_NEGATIVE,
    "DATA.NAME": one_of(
        "imagefolder", "shapes", "cifar10", "cifar100", "stl10", "digits", "fashion_mnist"
    ),
    "DATA.LABEL_RATIO": within(0, 1),
    "DATA.NUM_WORKERS": NON_NEGATIVE,
    "DATA.MAX_BAD_FRACTION": within(0, 1),
    "DATA.PIPELINE": one_of("cpu", "gpu"),
    # The shapes generator draws at least 24 px and needs one image of each of its 10 classes.
    "DATA.SHAPES.NUM_TRAIN": at_least(10, "an image count (one per class)"),
    "DATA.SHAPES.NUM_VAL": at_least(10, "an image count (one per class)"),
    "DATA.SHAPES.IMAGE_SIZE": at_least(24, "a size in px"),
    "DATA.SHAPES.SEED": NON_NEGATIVE,
    "DATA.DIGITS.SIZE": at_least(8, "a size in px (the native one is 8)"),
    # Each of the 10 classes on both sides of the 1,797 images.
    "DATA.DIGITS.NUM_TEST": within(10, 1787),
    "DATA.DIGITS.SPLIT_SEED": NON_NEGATIVE,
    "DATA.FASHION_MNIST.SIZE": at_least(14, "a size in px"),
    "DATA.FASHION_MNIST.NUM_TRAIN": balanced_subset(60000),
    "DATA.FASHION_MNIST.NUM_TEST": balanced_subset(10000),
    "DATA.FASHION_MNIST.SUBSET_SEED": NON_NEGATIVE,
    "INPUT.SIZE": POSITIVE,
    "INPUT.AUG": one_of("v1", "v2"),
    "INPUT.CROP_SCALE": crop_scale(),
    "MODEL.ARCH": one_of("resnet18", "resnet34", "resnet50", "resnet101"),
    "MODEL.HEAD": one_of("fc", "mlp"),
    "MODEL.DIM": at_least(1, "an embedding size"),
    "MOCO.K": POSITIVE,
    "MOCO.M": MOMENTUM,
    "MOCO.T": TEMPERATURE,
    "MOCO.BN_SPLITS": POSITIVE,
    "LOSS.NAME": one_of("unicon", "unicon_mean", "infonce"),
    "CO2.ALPHA": NON_NEGATIVE,
    "CO2.T": TEMPERATURE,
    "SOLVER.EPOCHS": POSITIVE,
    "SOLVER.BATCH_SIZE": POSITIVE,
    "SOLVER.BASE_LR": NON_NEGATIVE,
    "SOLVER.OPTIMIZER": one_of("sgd", "adamw"),
    "SOLVER.MOMENTUM": MOMENTUM,
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.SCHEDULE": one_of("cosine", "step"),
    "SOLVER.STEPS": ascending("epochs"),
    "SOLVER.GAMMA": above(0),
    "SOLVER.WARMUP_EPOCHS": NON_NEGATIVE,
    "LOSS.LABEL_WARMUP_EPOCHS": NON_NEGATIVE,
    "SOLVER.MAX_STEPS": NON_NEGATIVE,
    "SOLVER.MAX_NONFINITE": POSITIVE,
    "CHECKPOINT.PERIOD_STEPS": NON_NEGATIVE,
    "LOG.PERIOD": POSITIVE,
    "LOG.PROGRESS": one_of("auto", "on", "off"),
    "LOG.PLATEAU_TOLERANCE": within(0, 1, high_open=True),
    "LOG.PLATEAU_WINDOWS": NON_NEGATIVE,
    "EVAL.KNN_PERIOD": NON_NEGATIVE,
    "EVAL.KNN_K": POSITIVE,
    "EVAL.KNN_T": TEMPERATURE,
    "EVAL.BATCH_SIZE": POSITIVE,
    "LINCLS.MODE": one_of("standard", "fast"),
    "LINCLS.EPOCHS": POSITIVE,
    "LINCLS.BATCH_SIZE": POSITIVE,
    "LINCLS.BASE_LR": NON_NEGATIVE,
    "LINCLS.MOMENTUM": MOMENTUM,
    "LINCLS.WEIGHT_DECAY": NON_NEGATIVE,
    "LINCLS.STEPS": ascending("epochs"),
    "LINCLS.GAMMA": above(0),
    "LINCLS.CROP_SCALE": crop_scale(),
    "SEMISUP.LABEL_RATIO": within(0, 1, low_open=True),
    "SEMISUP.EPOCHS": POSITIVE,
    "SEMISUP.BATCH_SIZE": POSITIVE,
    "SEMISUP.BACKBONE_LR": NON_NEGATIVE,
    "SEMISUP.HEAD_LR": NON_NEGATIVE,
    "SEMISUP.MOMENTUM": MOMENTUM,
    "SEMISUP.WEIGHT_DECAY": NON_NEGATIVE,
    "SEMISUP.SCHEDULE": one_of("cosine", "step"),
    "SEMISUP.STEPS": ascending("epochs"),
    "SEMISUP.GAMMA": above(0),
    "SEMISUP.CROP_SCALE": crop_scale(),
    "BENCH.WARMUP_STEPS": NON_NEGATIVE,
    "BENCH.PEAK_TFLOPS": NON_NEGATIVE,
    "BENCH.NUM_IMAGES": at_least(10, "an image count (one per shapes class)"),
    "BENCH.IMAGE_SIZE": at_least(24, "a size in px"),
}


def lookup(cfg: CfgNode, dotted: str) -> Any:
    """The value at a dotted key (``"MOCO.T"``)."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def launch_world_size() -> int:
    """The number of processes of this launch: torchrun's WORLD_SIZE (1 without torchrun), read
    before the process group exists, as the config is checked before it is joined."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_rules(cfg: CfgNode, rules: Mapping[str, Valid]) -> None:
    """Every key of ``rules`` against its rule; the first failure raises a :class:`ConfigError`."""
    for key, valid in rules.items():
        value = lookup(cfg, key)
        if not valid.accepts(value):
            raise ConfigError(f"{key} = {value!r}; expected {valid.text}")


def check_relations(cfg: CfgNode, world_size: int) -> None:
    """The constraints between keys; the error names every key involved."""
    batch, splits = cfg.SOLVER.BATCH_SIZE, cfg.MOCO.BN_SPLITS
    if batch % world_size:
        raise ConfigError(
            f"SOLVER.BATCH_SIZE = {batch} (global); expected a multiple of the {world_size} "
            "processes"
        )
    local = batch // world_size
    # Split BN (one process with MOCO.SHUFFLE_BN) computes BN statistics per sub-batch; across
    # processes each process's batch is one BN group. A group needs two images: BN statistics
    # need more than one value per channel.
    if cfg.MOCO.SHUFFLE_BN and world_size == 1 and splits > 1:
        if local % splits or local // splits < 2:
            raise ConfigError(
                f"MOCO.BN_SPLITS = {splits} with SOLVER.BATCH_SIZE = {batch}; expected a number "
                f"of splits that divides the batch into sub-batches of at least 2 images (split "
                f"BN computes its statistics per sub-batch): {_splits_text(local)}"
            )
    elif local < 2:
        raise ConfigError(
            f"SOLVER.BATCH_SIZE = {batch} over {world_size} process(es); expected at least 2 "
            "images per process (batch norm needs more than one value per channel)"
        )
    kernel = 3 if cfg.MODEL.CIFAR_STEM else 7
    if cfg.INPUT.SIZE < kernel:
        raise ConfigError(
            f"INPUT.SIZE = {cfg.INPUT.SIZE} with MODEL.CIFAR_STEM = {cfg.MODEL.CIFAR_STEM}; "
            f"expected at least {kernel} px, the stem's first kernel ({kernel}x{kernel}): a "
            "smaller crop is mostly zero padding"
        )
    keys_per_step = batch * keys_per_image(cfg)
    if cfg.MOCO.K < keys_per_step:
        raise ConfigError(
            f"MOCO.K = {cfg.MOCO.K} with SOLVER.BATCH_SIZE = {batch} and LOSS.SYMMETRIC = "
            f"{cfg.LOSS.SYMMETRIC}; expected a queue of at least the {keys_per_step} keys each "
            "step enqueues (the whole batch's, twice with the symmetric loss)"
        )
    for key in ("SOLVER.WARMUP_EPOCHS", "LOSS.LABEL_WARMUP_EPOCHS"):
        if not lookup(cfg, key) < cfg.SOLVER.EPOCHS:
            raise ConfigError(
                f"{key} = {lookup(cfg, key)}; expected fewer than SOLVER.EPOCHS = "
                f"{cfg.SOLVER.EPOCHS}"
            )
    if cfg.EVAL.KNN_PERIOD and cfg.DATA.NAME == "imagefolder" and not cfg.DATA.VAL_ROOT:
        raise ConfigError(
            f"EVAL.KNN_PERIOD = {cfg.EVAL.KNN_PERIOD} needs a held-out split: DATA.VAL_ROOT is "
            "empty; expected the validation folder (same class subfolders as DATA.ROOT)"
        )


def keys_per_image(cfg: CfgNode) -> int:
    """Keys a step enqueues per image: one, or two with the symmetric loss (docs/methods.md §1)."""
    return 2 if cfg.LOSS.SYMMETRIC else 1


def check_config(cfg: CfgNode, world_size: int | None = None) -> None:
    """The pretraining config against :data:`RULES` and the relations between its keys."""
    check_rules(cfg, RULES)
    check_relations(cfg, launch_world_size() if world_size is None else world_size)


def _splits_text(n: int) -> str:
    """The split counts that divide ``n`` images into sub-batches of at least 2."""
    valid = [str(d) for d in range(1, n // 2 + 1) if n % d == 0]
    return f"one of {', '.join(valid)}" if valid else "a batch of at least 2 images"


class FloatLikeMixin:
    """For a ``CfgNode`` class: YAML files and ``KEY VALUE`` overrides may give a whole number
    where the default is a float (yacs alone refuses ``MOCO.T 1`` as "Type mismatch")."""

    def merge_from_other_cfg(self, cfg_other: Mapping[str, Any]) -> None:
        super().merge_from_other_cfg(type(self)(float_like_defaults(self, cfg_other)))

    def merge_from_list(self, cfg_list: Sequence[Any]) -> None:
        super().merge_from_list(float_like_overrides(self, cfg_list))


def float_like_defaults(defaults: CfgNode, loaded: Mapping[str, Any]) -> dict[str, Any]:
    """``loaded`` (a YAML file's nested dict) with whole numbers made floats where the default
    is a float, so that ``T: 1`` passes yacs's type check as 1.0."""
    out = {}
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, Mapping) else None
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            value = float_like_defaults(default, value)
        out[key] = _as_default_type(default, value)
    return out


def float_like_overrides(defaults: CfgNode, overrides: Sequence[Any]) -> list[Any]:
    """``KEY VALUE`` overrides with whole-number values made floats where the default is a
    float; other values are left for yacs to decode and check."""
    out = list(overrides)
    for i in range(1, len(out), 2):
        try:
            default = lookup(defaults, out[i - 1])
        except (KeyError, TypeError):
            continue  # yacs names the unknown key
        value = CfgNode._decode_cfg_value(out[i]) if isinstance(out[i], str) else out[i]
        out[i] = _as_default_type(default, value) if isinstance(default, float) else out[i]
    return out


def _as_default_type(default: Any, value: Any) -> Any:
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
