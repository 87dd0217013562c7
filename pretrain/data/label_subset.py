"""Labeled subsets for UniMoCo: which images keep their label (docs/methods.md §2).

Either a seeded class-balanced fraction of every class, or a user's list of files (UniMoCo's
and SimCLR's subset lists). The subset in force is written out so that a run can be repeated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

SUBSET_FILE = "labeled_subset.txt"
_MAX_LISTED = 5


class LabeledListError(ValueError):
    """A labeled-subset list that is missing or names images the dataset does not hold."""


def select_labeled(targets: Sequence[int], ratio: float, seed: int) -> np.ndarray:
    """Bool mask keeping ``ratio`` of each class (rounded half up, at least one image when
    ratio > 0), picked by a permutation seeded per (seed, class). Targets of -1 stay unlabeled.
    With one seed, the subset for a smaller ratio lies inside the subset for a larger one."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"label ratio = {ratio}; expected a value in [0, 1]")
    if seed < 0:
        raise ValueError(f"label subset seed = {seed}; expected a non-negative integer")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    mask = np.zeros(len(targets), dtype=bool)
    if ratio == 0.0:
        return mask
    for cls in np.unique(targets[targets >= 0]):
        members = np.flatnonzero(targets == cls)
        keep = max(1, math.floor(ratio * len(members) + 0.5))
        order = np.random.default_rng([seed, int(cls)]).permutation(len(members))
        mask[members[order[:keep]]] = True
    return mask


def _listing(entries: Sequence[str]) -> str:
    shown = ", ".join(entries[:_MAX_LISTED])
    more = len(entries) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _escapes_root(entry: str) -> bool:
    path = PurePosixPath(entry)
    return path.is_absolute() or ".." in path.parts


def read_labeled_list(path: str | Path, sample_ids: Sequence[str]) -> np.ndarray:
    """Bool mask over ``sample_ids`` of the images named in ``path``: one path relative to the
    dataset root per line (or a bare file name, matched when unique); ``#`` comments allowed."""
    path = Path(path)
    if not path.is_file():
        raise LabeledListError(f"labeled list {path} does not exist")
    index = {sid: i for i, sid in enumerate(sample_ids)}
    by_name: dict[str, list[int]] = {}
    for i, sid in enumerate(sample_ids):
        by_name.setdefault(PurePosixPath(sid).name, []).append(i)

    mask = np.zeros(len(sample_ids), dtype=bool)
    escaping, unknown, ambiguous = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if _escapes_root(entry):
            escaping.append(entry)
            continue
        key = str(PurePosixPath(entry))  # drops "./" and doubled slashes
        if key in index:
            mask[index[key]] = True
        elif "/" in key or key not in by_name:
            unknown.append(entry)
        elif len(by_name[key]) == 1:
            mask[by_name[key][0]] = True
        else:
            ambiguous.append(entry)

    problems = []
    if escaping:
        problems.append(f"{len(escaping)} paths outside the dataset root: {_listing(escaping)}")
    if unknown:
        problems.append(
            f"{len(unknown)} entries not in the dataset ({len(sample_ids)} images): "
            f"{_listing(unknown)}"
        )
    if ambiguous:
        problems.append(
            f"{len(ambiguous)} file names shared by several images (give the relative path): "
            f"{_listing(ambiguous)}"
        )
    if problems:
        raise LabeledListError(f"labeled list {path}: " + "; ".join(problems))
    return mask


def write_labeled_list(path: str | Path, sample_ids: Sequence[str], mask: np.ndarray) -> None:
    """Write the ids under ``mask``, sorted, one per line; atomically (temporary file + rename)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(sample_ids),):
        raise ValueError(
            f"write_labeled_list: mask of shape {mask.shape} for {len(sample_ids)} samples"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labeled = sorted(sid for sid, keep in zip(sample_ids, mask) if keep)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(f"{sid}\n" for sid in labeled), encoding="utf-8")
    os.replace(tmp, path)


def apply_label_subset(
    targets: Sequence[int],
    sample_ids: Sequence[str],
    ratio: float,
    labeled_list: str | Path,
    seed: int,
    output_dir: str | Path | None,
) -> tuple[list[int], np.ndarray]:
    """Targets with the unlabeled images set to -1, and the labeled mask. ``labeled_list`` (a
    path; "" for none) replaces ``ratio``. Writes ``<output_dir>/labeled_subset.txt``."""
    if len(targets) != len(sample_ids):
        raise ValueError(f"{len(targets)} targets for {len(sample_ids)} sample ids")
    if labeled_list:
        mask = read_labeled_list(labeled_list, sample_ids)
        no_label = [sid for sid, keep, t in zip(sample_ids, mask, targets) if keep and t < 0]
        if no_label:
            raise LabeledListError(
                f"labeled list {labeled_list}: {len(no_label)} entries name images that have "
                f"no label in the dataset: {_listing(no_label)}"
            )
    else:
        mask = select_labeled(targets, ratio, seed)
    if output_dir:
        write_labeled_list(Path(output_dir) / SUBSET_FILE, sample_ids, mask)
    return [int(t) if keep else -1 for t, keep in zip(targets, mask)], mask
