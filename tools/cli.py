"""The ``unimoco`` command: one entry point, one subcommand per stage.

Each subcommand lives in its own module and is imported only when it runs, so that
``unimoco convert`` does not pay for importing the training engine (or detectron2).
"""

from __future__ import annotations

import importlib
import sys

from . import __version__
from .third_party import quiet_known_warnings

# name -> (module, one-line help). Each module exposes ``main(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("unimoco.pretrain.engine.launch", "UniMoCo / MoCo pretraining of a ResNet"),
    "bench": ("unimoco.pretrain.engine.bench", "pretraining img/s: data, model step, end to end"),
    "knn": ("unimoco.pretrain.eval.knn", "weighted kNN accuracy of a backbone (frozen features)"),
    "lincls": ("unimoco.pretrain.eval.lincls", "linear protocol: new fc on a frozen backbone"),
    "semisup": ("unimoco.pretrain.eval.semisup", "fine-tune the network on a labeled fraction"),
    "convert": ("unimoco.transfer.convert", "backbone checkpoint -> detectron2 / torchvision"),
    "detect": ("unimoco.transfer.detect", "fine-tune and evaluate a detectron2 detector"),
    "prepare-voc-seg": (
        "unimoco.transfer.prepare_voc_seg",
        "VOC2012 + SBD -> SegmentationClassAug index PNGs and train_aug.txt",
    ),
    "pipeline": ("unimoco.pipeline.command", "pretrain -> evaluate -> convert -> detect -> report"),
    "configs": ("unimoco.list_configs", "the built-in configs, by the names --config-file takes"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: unimoco COMMAND [ARGS ...] | unimoco --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'unimoco COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``unimoco COMMAND ...`` to the command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"unimoco {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unimoco: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    quiet_known_warnings()
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
