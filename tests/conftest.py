"""Shared fixtures: no test writes to the user's cache; ``one_thread`` for the tests that
opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def unimoco_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``UNIMOCO_CACHE`` pointed at a fresh temporary folder for every test."""
    cache = tmp_path_factory.mktemp("unimoco_cache")
    monkeypatch.setenv("UNIMOCO_CACHE", str(cache))
    return cache


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tests of code paths that only exist on a GPU (run them where one is: see docs/benchmarks.md).
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda_only)]


@pytest.fixture(scope="session")
def converted_resnet(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``converted_resnet("resnet18")``: a random torchvision ResNet (seed 0) converted to
    detectron2's format by ``unimoco convert``, written once per architecture per test run."""
    from unimoco.pretrain.model.resnet import build_resnet
    from unimoco.transfer import convert

    folder = tmp_path_factory.mktemp("converted")

    def converted(arch: str) -> Path:
        pkl = folder / f"{arch}.pkl"
        if not pkl.exists():
            torch.manual_seed(0)
            torch.save(build_resnet(arch).state_dict(), folder / f"{arch}.pth")
            assert convert.main([str(folder / f"{arch}.pth"), str(pkl)]) == 0
        return pkl

    return converted
