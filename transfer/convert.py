"""``unimoco convert``: a pretrained ResNet backbone to detectron2 (.pkl) or torchvision (.pth).

Reads our checkpoints, official MoCo / UniMoCo ones and torchvision state dicts (see
:mod:`unimoco.pretrain.backbone`), drops the heads and renames the backbone (docs/methods.md §5).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from unimoco.pretrain.backbone import BackboneFormatError, BackboneState, load_backbone_state
from unimoco.transfer.files import save_pickle_atomic, save_torch_atomic

FORMATS = {".pkl": "detectron2", ".pth": "torchvision"}
AUTHOR = "unimoco convert"

# torchvision module path -> detectron2 module path, tried in order (first match wins).
_RENAMES = [
    (re.compile(r"^conv1$"), "stem.conv1"),
    (re.compile(r"^bn1$"), "stem.conv1.norm"),
    (re.compile(r"^layer(\d)\.(\d+)\.conv(\d)$"), "res{stage}.{1}.conv{2}"),
    (re.compile(r"^layer(\d)\.(\d+)\.bn(\d)$"), "res{stage}.{1}.conv{2}.norm"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.0$"), "res{stage}.{1}.shortcut"),
    (re.compile(r"^layer(\d)\.(\d+)\.downsample\.1$"), "res{stage}.{1}.shortcut.norm"),
]


def detectron2_name(key: str) -> str:
    """The detectron2 ResNet name of a torchvision ResNet key (``layer1.0.bn2.weight`` ->
    ``res2.0.conv2.norm.weight``)."""
    module, _, tensor = key.rpartition(".")
    for pattern, template in _RENAMES:
        found = pattern.match(module)
        if found:
            groups = found.groups()
            stage = int(groups[0]) + 1 if groups else 0
            return f"{template.format(*groups, stage=stage)}.{tensor}"
    raise BackboneFormatError(f"no detectron2 name for the ResNet key {key!r}")


def to_detectron2(state: BackboneState) -> dict[str, np.ndarray]:
    """detectron2 ResNet weights (float32 numpy arrays); BN step counters are dropped."""
    if state.cifar_stem:
        raise BackboneFormatError(
            f"{state.arch} with the CIFAR stem (3x3 conv1, no max-pool) cannot go to detectron2, "
            "whose ResNet stem is the 7x7/2 conv with max-pool; convert it --to torchvision instead"
        )
    return {
        detectron2_name(key): value.detach().float().cpu().numpy()
        for key, value in state.state_dict.items()
        if not key.endswith("num_batches_tracked")
    }


def to_torchvision(state: BackboneState) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict without ``fc.*`` (load it with ``strict=False``)."""
    return {key: value.detach().cpu().clone() for key, value in state.state_dict.items()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoco convert",
        description="Convert a pretrained ResNet backbone (ours, official MoCo/UniMoCo, or "
        "torchvision) to detectron2 (.pkl) or torchvision (.pth) weights.",
    )
    parser.add_argument("input", help="checkpoint to read (.pth / .pth.tar / .pt)")
    parser.add_argument("output", help="file to write (.pkl: detectron2, .pth: torchvision)")
    parser.add_argument(
        "--to",
        choices=sorted(set(FORMATS.values())),
        help="output format (default: from the output suffix)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Run ``unimoco convert INPUT OUTPUT [--to detectron2|torchvision]``."""
    parser = _parser()
    args = parser.parse_args(argv)
    source, target = Path(args.input), Path(args.output)
    fmt = args.to or FORMATS.get(target.suffix)
    if fmt is None:
        parser.error(
            f"cannot tell the format from the output suffix {target.suffix!r} of {target}; "
            "use .pkl (detectron2) or .pth (torchvision), or pass --to"
        )
    if target.exists() and source.exists() and target.resolve() == source.resolve():
        parser.error(f"output {target} is the input file; refusing to overwrite it")
    try:
        state = load_backbone_state(source)
        if fmt == "detectron2":
            weights = to_detectron2(state)
            payload = {"model": weights, "__author__": AUTHOR, "matching_heuristics": True}
            save_pickle_atomic(payload, target)
        else:
            weights = to_torchvision(state)
            save_torch_atomic(weights, target)
    except BackboneFormatError as err:
        print(f"unimoco convert: error: {err}", file=sys.stderr)
        return 1
    stem = ", CIFAR stem" if state.cifar_stem else ""
    print(
        f"{source} ({state.source_format}): {state.arch}{stem} -> {target} ({fmt}), "
        f"{len(weights)} tensors"
    )
    return 0
