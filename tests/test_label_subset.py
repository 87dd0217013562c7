"""Labeled subsets: class-balanced seeded selection, list files, and their application."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimoco.pretrain.data.label_subset import (
    LabeledListError,
    apply_label_subset,
    read_labeled_list,
    select_labeled,
    write_labeled_list,
)

# Unbalanced: 100 / 30 / 5 / 1 images, and three unlabeled ones.
TARGETS = [0] * 100 + [1] * 30 + [2] * 5 + [3] + [-1] * 3
IDS = [f"c{t}/img_{i:03d}.jpg" for i, t in enumerate(TARGETS)]


def per_class(mask: np.ndarray, targets=TARGETS) -> dict[int, int]:
    targets = np.asarray(targets)
    return {int(c): int(mask[targets == c].sum()) for c in np.unique(targets)}


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (0.0, {-1: 0, 0: 0, 1: 0, 2: 0, 3: 0}),
        (0.1, {-1: 0, 0: 10, 1: 3, 2: 1, 3: 1}),  # 0.5 rounds up; a class keeps at least one
        (0.5, {-1: 0, 0: 50, 1: 15, 2: 3, 3: 1}),
        (1.0, {-1: 0, 0: 100, 1: 30, 2: 5, 3: 1}),
    ],
)
def test_select_labeled_counts_per_class(ratio, expected):
    mask = select_labeled(TARGETS, ratio, seed=0)
    assert mask.dtype == bool and mask.shape == (len(TARGETS),)
    assert per_class(mask) == expected


def test_select_labeled_is_seeded_and_nested():
    a, b = select_labeled(TARGETS, 0.1, 7), select_labeled(TARGETS, 0.1, 7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, select_labeled(TARGETS, 0.1, 8))
    assert not (a & ~select_labeled(TARGETS, 0.5, 7)).any()  # 10 % lies inside 50 %


def test_select_labeled_rejects_bad_ratio_and_seed():
    with pytest.raises(ValueError, match=r"label ratio = 1.5; expected a value in \[0, 1\]"):
        select_labeled(TARGETS, 1.5, 0)
    with pytest.raises(ValueError, match="seed = -3"):
        select_labeled(TARGETS, 0.5, -3)


@settings(max_examples=60, deadline=None)
@given(
    targets=st.lists(st.integers(min_value=-1, max_value=6), max_size=120),
    ratio=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_select_labeled_property(targets, ratio, seed):
    mask = select_labeled(targets, ratio, seed)
    assert np.array_equal(mask, select_labeled(targets, ratio, seed))
    arr = np.asarray(targets, dtype=np.int64)
    assert not mask[arr < 0].any()
    for cls in set(targets) - {-1}:
        n = int((arr == cls).sum())
        expected = 0 if ratio == 0 else max(1, math.floor(ratio * n + 0.5))
        assert int(mask[arr == cls].sum()) == expected


def test_write_read_round_trip(tmp_path):
    mask = select_labeled(TARGETS, 0.3, 1)
    path = tmp_path / "sub" / "labeled.txt"
    write_labeled_list(path, IDS, mask)
    lines = path.read_text().splitlines()
    assert lines == sorted(lines) and len(lines) == mask.sum()
    assert np.array_equal(read_labeled_list(path, IDS), mask)
    assert [p.name for p in path.parent.iterdir()] == ["labeled.txt"]  # no temp file left


def test_read_ignores_comments_blanks_whitespace_and_duplicates(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("# my subset\n\n  c0/img_000.jpg  \nc0/img_000.jpg\n./c1/img_100.jpg\n")
    mask = read_labeled_list(path, IDS)
    assert np.flatnonzero(mask).tolist() == [0, 100]


def test_read_matches_unique_basenames(tmp_path):
    # SimCLR's lists carry bare file names such as n01440764_10026.JPEG.
    ids = ["n01/n01_1.JPEG", "n01/n01_2.JPEG", "n02/shared.JPEG", "n03/shared.JPEG"]
    path = tmp_path / "list.txt"
    path.write_text("n01_2.JPEG\nn01/n01_1.JPEG\n")
    assert read_labeled_list(path, ids).tolist() == [True, True, False, False]
    path.write_text("shared.JPEG\n")
    with pytest.raises(LabeledListError, match="shared by several images.*shared.JPEG"):
        read_labeled_list(path, ids)


def test_read_names_unknown_entries(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("c0/img_000.jpg\nc9/nope.jpg\n")
    with pytest.raises(LabeledListError) as err:
        read_labeled_list(path, IDS)
    assert str(path) in str(err.value) and "c9/nope.jpg" in str(err.value)
    assert "1 entries not in the dataset" in str(err.value)

    path.write_text("".join(f"x/missing_{i}.jpg\n" for i in range(8)))
    with pytest.raises(LabeledListError, match=r"missing_4.jpg \(and 3 more\)") as err:
        read_labeled_list(path, IDS)
    assert "missing_5.jpg" not in str(err.value)


@pytest.mark.parametrize("entry", ["../c0/img_000.jpg", "/abs/c0/img_000.jpg", "c0/../../x.jpg"])
def test_read_rejects_paths_outside_the_root(tmp_path, entry):
    path = tmp_path / "list.txt"
    path.write_text(f"{entry}\n")
    with pytest.raises(LabeledListError, match="outside the dataset root") as err:
        read_labeled_list(path, IDS)
    assert entry in str(err.value)


def test_read_missing_file(tmp_path):
    with pytest.raises(LabeledListError, match="nothere.txt does not exist"):
        read_labeled_list(tmp_path / "nothere.txt", IDS)


def test_apply_label_subset_by_ratio_writes_the_subset(tmp_path):
    targets, mask = apply_label_subset(TARGETS, IDS, 0.5, "", 3, tmp_path)
    assert np.array_equal(mask, select_labeled(TARGETS, 0.5, 3))
    assert targets == [t if m else -1 for t, m in zip(TARGETS, mask)]
    assert sum(t >= 0 for t in targets) == 69
    written = (tmp_path / "labeled_subset.txt").read_text().splitlines()
    assert written == sorted(sid for sid, m in zip(IDS, mask) if m)


def test_apply_label_subset_list_replaces_ratio(tmp_path):
    listing = tmp_path / "given.txt"
    listing.write_text("c1/img_100.jpg\nimg_000.jpg\n")
    targets, mask = apply_label_subset(TARGETS, IDS, 1.0, str(listing), 0, tmp_path / "out")
    assert np.flatnonzero(mask).tolist() == [0, 100]
    assert targets[0] == 0 and targets[100] == 1 and targets.count(-1) == len(TARGETS) - 2
    assert (tmp_path / "out" / "labeled_subset.txt").read_text() == (
        "c0/img_000.jpg\nc1/img_100.jpg\n"
    )
    _, mask = apply_label_subset(TARGETS, IDS, 0.0, "", 0, None)
    assert not mask.any()


def test_apply_label_subset_rejects_listing_unlabeled_images(tmp_path):
    listing = tmp_path / "given.txt"
    listing.write_text(f"{IDS[-1]}\n")
    with pytest.raises(LabeledListError, match="no label in the dataset"):
        apply_label_subset(TARGETS, IDS, 0.0, listing, 0, None)
