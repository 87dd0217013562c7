"""Semantic segmentation data sets given by a list of image ids: ``<image_root>/<id>.jpg`` and
``<sem_seg_root>/<id>.png`` (single-channel class-index PNGs, ignore value 255), the ids read
from a split file (VOC's ``ImageSets/Segmentation/<split>.txt`` layout).

detectron2's ``load_sem_seg`` pairs every file of an image folder with every file of a label
folder, so it cannot pick a split out of one folder; this loader reads the split's list instead
and gives the same dicts (plus height and width, so that a resized test image is scored at its
original size).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from PIL import Image

from unimoco.transfer.errors import DatasetError

IGNORE_LABEL = 255
# Masks whose format is checked before training (spread over the list).
LABEL_SAMPLE = 8


def read_split(split_file: Path) -> list[str]:
    """The ids of a split file, one a line (blank lines skipped)."""
    return [line.strip() for line in split_file.read_text().splitlines() if line.strip()]


def load_sem_seg_list(image_root: Path, sem_seg_root: Path, split_file: Path) -> list[dict]:
    """detectron2 dataset dicts (file_name, sem_seg_file_name, height, width) of the ids in
    ``split_file``; a listed id without its image or mask is a ``DatasetError``."""
    records = []
    for image_id in read_split(split_file):
        image, label = image_root / f"{image_id}.jpg", sem_seg_root / f"{image_id}.png"
        for path in (image, label):
            if not path.is_file():
                raise DatasetError(f"{split_file} lists {image_id!r} but {path} does not exist")
        with Image.open(image) as img:
            width, height = img.size
        records.append(
            {
                "file_name": str(image),
                "sem_seg_file_name": str(label),
                "height": height,
                "width": width,
            }
        )
    return records


def register_sem_seg_list(
    name: str,
    image_root: Path,
    sem_seg_root: Path,
    split_file: Path,
    stuff_classes: Sequence[str],
    label_hint: str = "",
) -> None:
    """Register data set ``name`` (evaluator_type "sem_seg") over a split file; ``label_hint``
    ends the error about a badly written mask (how to write good ones)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_sem_seg_list(image_root, sem_seg_root, split_file))
    MetadataCatalog.get(name).set(
        evaluator_type="sem_seg",
        stuff_classes=list(stuff_classes),
        ignore_label=IGNORE_LABEL,
        image_root=str(image_root),
        sem_seg_root=str(sem_seg_root),
        split_file=str(split_file),
        label_hint=label_hint,
    )


def missing_sem_seg_files(meta: Metadata) -> list[Path]:
    """The image folder, label folder or split file that does not exist; when all do, a sample
    of the masks is checked (:func:`check_label_sample`)."""
    wanted = [Path(meta.image_root), Path(meta.sem_seg_root)]
    missing = [folder for folder in wanted if not folder.is_dir()]
    split_file = Path(meta.split_file)
    missing = missing or ([] if split_file.is_file() else [split_file])
    if not missing:
        check_label_sample(meta)
    return missing


def check_label_sample(meta: Metadata) -> None:
    """Raise a ``DatasetError`` when one of :data:`LABEL_SAMPLE` masks spread over the split is
    not a single-channel PNG of class ids and the ignore value. detectron2 reads masks with PIL's
    ``convert("L")``, which turns a palette PNG's colours into grey levels, i.e. wrong ids."""
    ids = read_split(Path(meta.split_file))
    if not ids:
        raise DatasetError(f"{meta.split_file} lists no image")
    picks = sorted({ids[i] for i in np.linspace(0, len(ids) - 1, LABEL_SAMPLE).astype(int)})
    valid = np.array([*range(len(meta.stuff_classes)), meta.ignore_label])
    hint = f"; {meta.label_hint}" if meta.label_hint else ""
    for image_id in picks:
        path = Path(meta.sem_seg_root) / f"{image_id}.png"
        if not path.is_file():
            raise DatasetError(f"{meta.split_file} lists {image_id!r} but {path} does not exist")
        with Image.open(path) as mask:
            if mask.mode != "L":
                raise DatasetError(
                    f"{path} is a {mask.mode!r}-mode image; expected a single-channel ('L') PNG "
                    f"of class ids 0-{len(meta.stuff_classes) - 1} and {meta.ignore_label}{hint}"
                )
            values = np.unique(np.asarray(mask))
        bad = values[~np.isin(values, valid)]
        if bad.size:
            raise DatasetError(
                f"{path} holds label value(s) {', '.join(map(str, bad[:5]))}; expected class ids "
                f"0-{len(meta.stuff_classes) - 1} and {meta.ignore_label}{hint}"
            )
