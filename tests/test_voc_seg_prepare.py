"""``unimoco prepare-voc-seg`` on tiny VOC2012 + SBD trees: SBD's .mat structs and VOC's palette
PNGs become index PNGs, the train_aug list is SBD train + val + VOC train minus VOC val, existing
files are kept, and a missing folder is one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from unimoco.cli import main as cli

# VOC2012's segmentation lists and SBD's; 2008_000003 is in both VOC val and SBD train.
VOC_TRAIN, VOC_VAL = ["2007_000001", "2007_000002"], ["2007_000003", "2008_000003"]
SBD_TRAIN, SBD_VAL = ["2008_000001", "2008_000003"], ["2008_000002", "2007_000001"]


def _labels(seed: int) -> np.ndarray:
    labels = np.zeros((12, 16), dtype=np.uint8)
    labels[2:10, 3:12] = seed % 20 + 1
    return labels


def _trees(root: Path) -> tuple[Path, Path]:
    voc, sbd = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    (voc / "SegmentationClass").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (sbd / "cls").mkdir(parents=True)
    palette = [v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)]
    for index, image_id in enumerate(VOC_TRAIN + VOC_VAL):
        labels = _labels(index)
        labels[1, :] = 255  # VOC's object borders
        png = Image.fromarray(labels, "P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for index, image_id in enumerate(SBD_TRAIN + SBD_VAL):
        gt = {
            "Segmentation": _labels(10 + index),
            "Boundaries": np.zeros(1),
            "CategoriesPresent": 1,
        }
        scipy.io.savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": gt})
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, sbd


def test_prepare_writes_index_pngs_and_train_aug(tmp_path, capsys):
    voc, sbd = _trees(tmp_path)
    kept = voc / "SegmentationClassAug" / "2007_000002.png"
    kept.parent.mkdir()
    Image.fromarray(np.full((12, 16), 7, dtype=np.uint8), "L").save(kept)
    assert cli(["prepare-voc-seg", "--voc-root", str(voc), "--sbd-root", str(sbd)]) == 0
    assert "6 file(s) written, 1 existing kept" in capsys.readouterr().out
    train_aug = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert train_aug == ["2007_000001", "2007_000002", "2008_000001", "2008_000002"]
    out = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(set(train_aug) | set(VOC_VAL))
    for image_id in (*VOC_TRAIN, *VOC_VAL, *SBD_TRAIN, *SBD_VAL):
        assert Image.open(out / f"{image_id}.png").mode == "L"
    # VOC's mask wins where both exist (its palette indices, 255 borders kept); else SBD's.
    voc_labels = _labels(0)
    voc_labels[1, :] = 255
    assert (np.asarray(Image.open(out / "2007_000001.png")) == voc_labels).all()
    voc_labels = _labels(3)
    voc_labels[1, :] = 255
    assert (np.asarray(Image.open(out / "2008_000003.png")) == voc_labels).all()
    assert (np.asarray(Image.open(out / "2008_000002.png")) == _labels(12)).all()
    assert (np.asarray(Image.open(kept)) == 7).all()  # the existing file is kept
    assert not list(out.glob(".*"))  # no temporary files left
    # A second run writes nothing.
    assert cli(["prepare-voc-seg", "--voc-root", str(voc), "--sbd-root", str(sbd)]) == 0
    assert "0 file(s) written, 7 existing kept" in capsys.readouterr().out


def test_prepare_names_a_missing_folder(tmp_path, capsys):
    voc, sbd = _trees(tmp_path)
    (sbd / "cls").rename(sbd / "moved")
    assert cli(["prepare-voc-seg", "--voc-root", str(voc), "--sbd-root", str(sbd)]) == 2
    err = capsys.readouterr().err.splitlines()
    # Only this line names the command (a logging handler an earlier test left may add more).
    assert [line for line in err if line.startswith("unimoco prepare-voc-seg")] == [
        f"unimoco prepare-voc-seg: {sbd / 'cls'} does not exist"
    ]
