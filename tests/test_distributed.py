"""Two processes on gloo: all-gathered enqueue and shuffle BN against one-process references."""

import copy
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from unimoco.pretrain import distributed as du
from unimoco.pretrain.model.unimoco import UniMoCo

WORLD = 2
LOCAL_BATCH = 4


def _model() -> UniMoCo:
    torch.manual_seed(0)
    return UniMoCo("resnet18", dim=8, queue_size=16, cifar_stem=True, bn_splits=1)


def _images() -> torch.Tensor:
    return torch.randn(WORLD * LOCAL_BATCH, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model = _model()
    images = _images()[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]
    torch.manual_seed(42)  # rank 0's permutation is the one broadcast
    with torch.no_grad():
        keys = model._encode_keys(images)
    labels = torch.arange(LOCAL_BATCH) + 10 * rank
    model.enqueue(keys, labels)
    torch.save(
        {"keys": keys, "queue": model.queue, "labels": model.queue_labels, "ptr": model.queue_ptr},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def test_two_process_shuffle_bn_and_enqueue(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    # Reference on one process: the same global permutation, each rank's shuffled slice through
    # BN on its own, then the keys put back in the original order.
    assert du.get_world_size() == 1
    model = _model()
    images = _images()
    torch.manual_seed(42)
    perm = torch.randperm(len(images))
    expected = torch.empty(len(images), 8)
    encoder = copy.deepcopy(model.encoder_k)
    with torch.no_grad():
        for r in range(WORLD):
            part = perm[r * LOCAL_BATCH : (r + 1) * LOCAL_BATCH]
            expected[part] = nn.functional.normalize(encoder(images[part]), dim=1)
    gathered = torch.cat([res["keys"] for res in results])
    torch.testing.assert_close(gathered, expected, rtol=1e-4, atol=1e-5)

    # Both ranks enqueued the keys of both, in rank order, and agree exactly.
    for res in results:
        torch.testing.assert_close(res["queue"][: WORLD * LOCAL_BATCH], gathered)
        assert res["labels"][: WORLD * LOCAL_BATCH].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
        assert res["ptr"].item() == WORLD * LOCAL_BATCH
    assert torch.equal(results[0]["queue"], results[1]["queue"])
