"""unimoco: UniMoCo pretraining of ResNet backbones and their transfer to detectron2.

The source folders are mapped onto namespaced import names (``pretrain/`` -> ``unimoco.pretrain``,
``transfer/`` -> ``unimoco.transfer``, ``pipeline/`` -> ``unimoco.pipeline``, ``tools/`` ->
``unimoco``, ``configs/`` -> ``unimoco.configs`` with its YAML files as package data), the way
detectron2 maps its ``projects/``, so that nothing collides with the ``pretrain.py`` files in
users' own trees. The version is the one in ``tools/__init__.py``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE_ROOTS = {
    "unimoco": "tools",
    "unimoco.pretrain": "pretrain",
    "unimoco.transfer": "transfer",
    "unimoco.pipeline": "pipeline",
    "unimoco.configs": "configs",
}


def _version() -> str:
    text = (Path(__file__).parent / "tools" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.+)"$', text, re.M).group(1)


def _packages() -> list[str]:
    packages = []
    for name, folder in PACKAGE_ROOTS.items():
        packages.append(name)
        packages.extend(f"{name}.{sub}" for sub in find_packages(folder))
    return packages


setup(
    name="unimoco",
    version=_version(),
    description="UniMoCo / MoCo pretraining of ResNets and their transfer to detectron2",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir=PACKAGE_ROOTS,
    package_data={"unimoco.configs": ["*/*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "pillow",
        "fvcore<0.1.6",
        "iopath<0.1.10",
        "yacs",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "pycocotools",
        "scikit-learn",
        # detectron2's own dependencies (it is installed without them; see tools/install.sh)
        "omegaconf>=2.1,<2.4",
        "hydra-core",
        "termcolor",
        "tabulate",
        "cloudpickle",
        "setuptools<81",
    ],
    extras_require={
        # detectron2's Cityscapes loaders (polygons through shapely) and evaluators, and its
        # LVIS ones.
        "cityscapes": ["cityscapesscripts", "shapely"],
        "lvis": ["lvis"],
        "dev": [
            "pytest",
            "pytest-timeout",
            "hypothesis",
            "ruff",
            "cityscapesscripts",
            "shapely",
            "lvis",
        ],
    },
    entry_points={"console_scripts": ["unimoco = unimoco.cli:main"]},
)
