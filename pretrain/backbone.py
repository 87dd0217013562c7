"""Read a ResNet backbone out of any checkpoint we accept, in torchvision key names.

Accepted layouts: ours (``{"model": {"encoder_q.<key>": ...}}``), official MoCo / UniMoCo
(``{"state_dict": {"module.encoder_q.<key>": ...}}``), the epoch checkpoints of ``unimoco
semisup`` (``{"epoch": E, "state": {"model": <ResNet>}}``: a fine-tuned network's backbone) and
plain torchvision ResNet state dicts, bare or wrapped in ``{"state_dict": ...}`` /
``{"model": ...}``, with or without ``module.``.
Files are loaded with ``weights_only=True``: nothing in them can run code.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from unimoco.pretrain.model.resnet import build_resnet

# (bottleneck blocks?, blocks per layer) -> torchvision architecture name
_LAYOUTS = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
}
_HEAD_PREFIX = "fc."
# BN step counters: absent from old torchvision checkpoints and unused by inference, so optional.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_SHOWN = 8  # keys listed in an error message
# The layout of the evaluation commands' epoch checkpoints (pretrain/eval/resume.py).
_EPOCH_CHECKPOINT = "state.model"
# torch.save writes a zip archive (legacy format: a pickle, opening with the PROTO opcode).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


class BackboneFormatError(ValueError):
    """A checkpoint that holds no usable ResNet backbone; the message names the file and keys."""


@dataclass
class BackboneState:
    """A ResNet backbone in torchvision key names (no ``fc.*``) and where it came from."""

    arch: str
    cifar_stem: bool
    state_dict: dict[str, torch.Tensor]
    source_format: str  # unimoco | moco | semisup | torchvision


def load_backbone_state(path: str | Path) -> BackboneState:
    """Load ``path`` (weights only), find the query-encoder / plain ResNet, check it is complete."""
    path = Path(path)
    if not path.is_file():
        raise BackboneFormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise BackboneFormatError(
            f"{path}: not a PyTorch checkpoint (a .pth / .pt / .tar file written by torch.save)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise BackboneFormatError(f"{path}: not a PyTorch checkpoint: {err}") from None
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not|\n|$)", str(err))
        detail = f" ({found.group(1)})" if found else ""
        raise BackboneFormatError(
            f"{path}: refused by torch.load(weights_only=True){detail}: only PyTorch checkpoints "
            "of tensors and plain Python values are read, since unpickling other objects can "
            "run code"
        ) from None
    except Exception as err:  # torch.load fails in many ways on bytes that are no checkpoint
        raise BackboneFormatError(
            f"{path}: not a PyTorch checkpoint (.pth / .pt / .tar): {type(err).__name__}: {err}"
        ) from None
    return backbone_from_checkpoint(obj, str(path))


def backbone_from_checkpoint(obj: object, name: str = "<checkpoint>") -> BackboneState:
    """The backbone inside an already loaded checkpoint object; ``name`` is used in errors."""
    if not isinstance(obj, dict):
        raise BackboneFormatError(f"{name}: expected a dict checkpoint, got {type(obj).__name__}")
    container, weights = _unwrap(obj)
    prefix = _backbone_prefix(weights, obj, name)
    backbone = {
        key[len(prefix) :]: value
        for key, value in weights.items()
        if key.startswith(prefix) and not key[len(prefix) :].startswith(_HEAD_PREFIX)
    }
    arch, cifar_stem = _detect_arch(backbone, name)
    _check_keys(backbone, arch, cifar_stem, name)
    if "encoder_q" in prefix:
        source = "unimoco" if container == "model" else "moco"
    else:
        source = "semisup" if container == _EPOCH_CHECKPOINT else "torchvision"
    return BackboneState(arch, cifar_stem, backbone, source)


def _unwrap(obj: dict) -> tuple[str, dict]:
    state = obj.get("state")
    if "epoch" in obj and isinstance(state, dict) and isinstance(state.get("model"), dict):
        return _EPOCH_CHECKPOINT, state["model"]
    for container in ("state_dict", "model"):
        if isinstance(obj.get(container), dict):
            return container, obj[container]
    return "", obj


def _backbone_prefix(weights: dict, obj: dict, name: str) -> str:
    """The key prefix in front of a torchvision ResNet (``encoder_q.`` preferred over others)."""
    stem = "conv1.weight"
    prefixes = [
        key[: -len(stem)]
        for key in weights
        if isinstance(key, str)
        and key.endswith(stem)
        and f"{key[: -len(stem)]}layer1.0.conv1.weight" in weights
        and "encoder_k" not in key
    ]
    query = [p for p in prefixes if "encoder_q" in p]
    if query:
        prefixes = query
    if len(prefixes) == 1:
        return prefixes[0]
    if prefixes:
        raise BackboneFormatError(
            f"{name}: several ResNets in one file (key prefixes {', '.join(map(repr, prefixes))}); "
            "expected one backbone or a MoCo query encoder 'encoder_q.'"
        )
    raise BackboneFormatError(
        f"{name}: no ResNet backbone found (looked for 'conv1.weight' and "
        f"'layer1.0.conv1.weight', optionally under 'encoder_q.' / 'module.'); "
        f"top-level keys: {_show(obj)}"
    )


def _detect_arch(backbone: dict, name: str) -> tuple[str, bool]:
    bottleneck = "layer1.0.conv3.weight" in backbone
    blocks = []
    for layer in range(1, 5):
        pattern = re.compile(rf"layer{layer}\.(\d+)\.")
        found = {int(m.group(1)) for key in backbone if (m := pattern.match(key))}
        blocks.append(max(found) + 1 if found else 0)
    arch = _LAYOUTS.get((bottleneck, tuple(blocks)))
    if arch is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        known = "; ".join(f"{a}: {list(b)}" for (_, b), a in _LAYOUTS.items())
        raise BackboneFormatError(
            f"{name}: unrecognised ResNet layout ({kind}, blocks per layer {blocks}); "
            f"expected one of {known}"
        )
    stem = backbone["conv1.weight"]
    return arch, tuple(stem.shape[-2:]) == (3, 3)


def _check_keys(backbone: dict, arch: str, cifar_stem: bool, name: str) -> None:
    with torch.device("meta"):
        reference = build_resnet(arch, cifar_stem=cifar_stem).state_dict()
    expected = {k: v.shape for k, v in reference.items() if not k.startswith(_HEAD_PREFIX)}
    missing = [k for k in expected if k not in backbone and not k.endswith(_OPTIONAL_SUFFIX)]
    extra = [k for k in backbone if k not in expected]
    if missing:
        raise BackboneFormatError(f"{name}: {arch} backbone is missing keys: {_show(missing)}")
    if extra:
        raise BackboneFormatError(
            f"{name}: unexpected keys next to the {arch} backbone: {_show(extra)}"
        )
    for key, value in backbone.items():
        if not isinstance(value, torch.Tensor):
            raise BackboneFormatError(
                f"{name}: {key} is a {type(value).__name__}, expected a tensor"
            )
        if value.shape != expected[key]:
            raise BackboneFormatError(
                f"{name}: {key} has shape {list(value.shape)}, {arch} expects {list(expected[key])}"
            )


def _show(keys) -> str:
    keys = [str(k) for k in keys]
    more = f" ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more if keys else "(none)"
