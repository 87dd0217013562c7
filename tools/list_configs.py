"""``unimoco configs``: the built-in configs, one line each, so that a recipe can be named
instead of located (``--config-file pretrain/moco_v2_r50_200ep``)."""

from __future__ import annotations

import argparse

from .configs import ROOT, builtin_names, description


def main(argv: list[str]) -> int:
    """Print every built-in config's name and summary, and where the files are."""
    argparse.ArgumentParser(
        prog="unimoco configs",
        description="List the built-in configs. Any --config-file, _BASE_ or pipeline "
        "CONFIG_FILE takes a path or one of these names (.yaml optional); a path that exists "
        "wins.",
    ).parse_args(argv)
    names = builtin_names()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {description(name)}".rstrip())
    print(f"\nThe files are in {ROOT}. Use a name as a config file:")
    print("  unimoco pretrain --config-file pretrain/moco_v2_r50_200ep DATA.ROOT /data/train")
    print("or start your own YAML from one with _BASE_: pretrain/moco_v2_r50_200ep")
    return 0
