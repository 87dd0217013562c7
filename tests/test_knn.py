"""Weighted kNN: answers known by construction, the online monitor, and sharding over 2 ranks."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import Dataset

from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.eval.features import (
    EvalError,
    build_backbone,
    compute_outputs,
    random_backbone_state,
)
from unimoco.pretrain.eval.knn import knn_evaluate, knn_monitor, knn_scores
from unimoco.pretrain.eval.metrics import topk_accuracy

# Digits at their native 8 px through an R18: features of all 1,797 images in a few seconds.
DIGITS_16 = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8",
    "MODEL.ARCH", "resnet18", "DATA.NUM_WORKERS", "0", "EVAL.BATCH_SIZE", "512",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _clusters(per_class: int, num_classes: int, dim: int, seed: int):
    """Tight clusters around orthogonal directions: linearly and kNN separable."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:num_classes] * 5
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    points = centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=generator)
    return F.normalize(points, dim=1), labels


def test_separable_clusters_are_classified_perfectly():
    bank, bank_labels = _clusters(40, 6, 16, seed=0)
    queries, labels = _clusters(10, 6, 16, seed=1)
    scores = knn_scores(queries, bank, bank_labels, 6, k=20, temperature=0.1)
    assert topk_accuracy(scores, labels) == {"top1": 100.0, "top5": 100.0}


def test_weights_are_exp_similarity_over_temperature():
    # Query (1, 0); class 0 has two neighbours at cosine 0.5, class 1 one at cosine 0.9.
    query = torch.tensor([[1.0, 0.0]])
    angle_half, angle_near = math.acos(0.5), math.acos(0.9)
    bank = torch.tensor(
        [
            [math.cos(angle_half), math.sin(angle_half)],
            [math.cos(angle_half), -math.sin(angle_half)],
            [math.cos(angle_near), math.sin(angle_near)],
            [-1.0, 0.0],  # far away, outside k = 3
        ]
    )
    bank_labels = torch.tensor([0, 0, 1, 2])
    sharp = knn_scores(query, bank, bank_labels, 3, k=3, temperature=0.1)
    expected = torch.tensor([[2 * math.exp(5.0), math.exp(9.0), 0.0]])
    torch.testing.assert_close(sharp, expected, rtol=1e-5, atol=0)
    assert sharp.argmax().item() == 1  # one close neighbour outweighs two far ones at T = 0.1
    flat = knn_scores(query, bank, bank_labels, 3, k=3, temperature=1.0)
    torch.testing.assert_close(flat, torch.tensor([[2 * math.exp(0.5), math.exp(0.9), 0.0]]))
    assert flat.argmax().item() == 0  # ... but not at T = 1
    nearest = knn_scores(query, bank, bank_labels, 3, k=1, temperature=1.0)
    assert nearest.argmax().item() == 1 and nearest[0, 0] == 0
    # k beyond the bank is capped: the far class-2 entry joins with weight exp(-1 / T).
    everything = knn_scores(query, bank, bank_labels, 3, k=200, temperature=1.0)
    assert everything[0, 2].item() == pytest.approx(math.exp(-1.0))


def test_topk_accuracy_counts_ranks():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    result = topk_accuracy(scores, targets, ks=(1, 2, 5))
    assert result["top1"] == pytest.approx(100 / 3)
    assert result["top2"] == pytest.approx(200 / 3)
    assert result["top5"] == 100.0  # capped at the 3 classes


def test_bad_bank_labels_are_clear_errors():
    bank, labels = _clusters(4, 3, 8, seed=0)
    with pytest.raises(EvalError, match=r"labels span \[0, 2\]; expected labels in \[0, 2\)"):
        knn_scores(bank, bank, labels, 2)
    with pytest.raises(EvalError, match="memory bank is empty"):
        knn_scores(bank, bank[:0], labels[:0], 3)


class _Writer:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def write(self, step: int, scalars: dict) -> None:
        self.rows.append((step, scalars))


def test_online_monitor_runs_every_period_and_restores_train_mode(caplog):
    cfg = load_cfg(None, DIGITS_16 + ["EVAL.KNN_PERIOD", "2"])
    encoder = build_backbone(random_backbone_state("resnet18", False, seed=0))
    encoder.fc = torch.nn.Linear(512, 8)  # a projection head, which the monitor must skip
    encoder.train()
    metrics = _Writer()
    device = torch.device("cpu")
    knn_monitor(encoder, cfg, device, epoch=1, step=10, metrics=metrics)  # 1: not a multiple of 2
    assert metrics.rows == []
    with caplog.at_level("INFO", logger="unimoco"):
        knn_monitor(encoder, cfg, device, epoch=2, step=20, metrics=metrics)
    expected = knn_evaluate(encoder, cfg, device)
    assert metrics.rows == [(20, {"knn_top1": expected["top1"], "knn_top5": expected["top5"]})]
    assert 30.0 < expected["top1"] <= 100.0  # random features of digits are far above chance
    assert expected["num_train"] == 1437 and expected["num_val"] == 360
    assert encoder.training and "epoch 2: kNN top-1" in caplog.text


class _Numbers(Dataset):
    """Item i: a 2-vector (i, -i) and label i % 3, or -1 (unlabeled) for multiples of 5."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        label = -1 if index % 5 == 0 else index % 3
        return torch.tensor([float(index), -float(index)]), label


def _outputs(dataset: Dataset):
    cfg = SimpleNamespace(EVAL=SimpleNamespace(BATCH_SIZE=2), DATA=SimpleNamespace(NUM_WORKERS=0))
    return compute_outputs(lambda x: x * 2, 2, dataset, cfg, torch.device("cpu"))


def _rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    outputs, labels = _outputs(_Numbers(11))
    torch.save({"outputs": outputs, "labels": labels}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_outputs_sharded_over_two_ranks_match_one_process(tmp_path):
    outputs, labels = _outputs(_Numbers(11))
    kept = [i for i in range(11) if i % 5]
    assert labels.tolist() == [i % 3 for i in kept]
    assert outputs[:, 0].tolist() == [2.0 * i for i in kept]
    mp.spawn(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(result["outputs"], outputs) and torch.equal(result["labels"], labels)
