"""The built-in configs (the YAML files under this folder, shipped in the wheel) and how a config
value finds one: a file path that exists wins; otherwise the value names a built-in config by
its path under this folder, with or without ``.yaml`` (``pretrain/moco_v2_r50_200ep``).

The same rule holds inside a YAML file, for ``_BASE_`` (fvcore reads it relative to the including
file; when no such file exists, a built-in name is taken) and for a pipeline's ``CONFIG_FILE``.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import IO

import yaml
from fvcore.common.config import BASE_KEY, CfgNode

ROOT = Path(__file__).resolve().parent
SUFFIX = ".yaml"
LIST_HINT = "'unimoco configs' lists the built-in configs"


class UnknownConfigError(ValueError):
    """A config value that is neither an existing file nor a built-in config's name."""


def builtin_names() -> list[str]:
    """Every built-in config's name (``folder/name``, no ``.yaml``), sorted."""
    files = ROOT.rglob(f"*{SUFFIX}")
    return sorted(path.relative_to(ROOT).with_suffix("").as_posix() for path in files)


def builtin_path(name: str) -> Path | None:
    """The file of the built-in config ``name`` (``.yaml`` optional), or None when there is none."""
    if not name or Path(name).is_absolute():
        return None
    path = (ROOT / (name if name.endswith(SUFFIX) else name + SUFFIX)).resolve()
    return path if path.is_relative_to(ROOT) and path.is_file() else None


def resolve_config_file(value: str) -> Path:
    """The config file ``value`` means: an existing path, else the built-in config it names."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    builtin = builtin_path(value)
    if builtin is None:
        raise UnknownConfigError(
            f"config file {value!r} does not exist: neither a file nor a built-in config "
            f"({LIST_HINT}, e.g. pretrain/moco_v2_r50_200ep)"
        )
    return builtin


def resolve_relative(value: str, including: str) -> str:
    """Where a config named inside the YAML file ``including`` lives: the path relative to that
    file when it exists (as fvcore reads ``_BASE_``), else the built-in config of that name, else
    the relative path (for the error to name)."""
    path = os.path.join(os.path.dirname(including), os.path.expanduser(value))
    if os.path.isfile(path):
        return path
    builtin = builtin_path(value)
    return path if builtin is None else str(builtin)


def description(name: str) -> str:
    """A one-line summary of a built-in config: the first sentence of its leading comment or,
    when that runs past the first line, the first line up to its last clause break."""
    lines = []
    for line in builtin_path(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    if not lines:
        return ""
    sentence = re.split(r"(?<=\.)\s", " ".join(lines), maxsplit=1)[0]
    summary = sentence if len(sentence) <= len(lines[0]) else _up_to_last_clause(lines[0])
    return summary.rstrip(".")


class BuiltinBaseMixin:
    """For a ``CfgNode`` class: a ``_BASE_`` that names no file next to the including one but a
    built-in config loads that built-in config (fvcore itself only knows paths)."""

    @classmethod
    def _open_cfg(cls, filename: str) -> IO[str]:
        with super()._open_cfg(filename) as stream:
            text = stream.read()
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:
            return io.StringIO(text)  # fvcore reports it (or loads it unsafely, when allowed)
        if not isinstance(loaded, dict) or BASE_KEY not in loaded:
            return io.StringIO(text)
        bases = loaded[BASE_KEY]
        located = [_base_file(base, filename) for base in _as_list(bases)]
        if located == _as_list(bases):
            return io.StringIO(text)
        loaded[BASE_KEY] = located if isinstance(bases, list) else located[0]
        return io.StringIO(yaml.safe_dump(loaded, sort_keys=False))


class ConfigNode(BuiltinBaseMixin, CfgNode):
    """fvcore's ``CfgNode`` whose ``_BASE_`` may name a built-in config."""


def _base_file(base: str, including: str) -> str:
    if not isinstance(base, str) or base.startswith(("~", "/", "http://", "https://")):
        return base  # fvcore's own cases
    if os.path.isfile(os.path.join(os.path.dirname(including), base)):
        return base
    builtin = builtin_path(base)
    if builtin is None:
        raise UnknownConfigError(
            f"_BASE_ {base!r}: no such file next to {including}, and it names no built-in "
            f"config ({LIST_HINT})"
        )
    return str(builtin)


def _up_to_last_clause(line: str) -> str:
    depth, cut = 0, len(line)
    for index, char in enumerate(line):
        depth += (char in "([") - (char in ")]")
        if depth == 0 and char in ",;:":
            cut = index
    return line[:cut]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]
