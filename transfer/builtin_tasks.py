"""Imports every module that adds a task row (``unimoco.transfer.tasks.TASKS``) or a root layout
(``unimoco.transfer.datasets.ROOT_LAYOUTS``), so that importing this one makes them all known."""

import unimoco.transfer.cityscapes  # noqa: F401
import unimoco.transfer.coco_keypoints  # noqa: F401
import unimoco.transfer.lvis_instances  # noqa: F401
import unimoco.transfer.sem_seg  # noqa: F401
import unimoco.transfer.voc07_cls  # noqa: F401
