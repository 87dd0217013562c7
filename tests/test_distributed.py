"""Two processes on gloo: all-gathered enqueue and shuffle BN against one-process references."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.utils.data import default_collate

from unimoco.pretrain import distributed as du
from unimoco.pretrain.checkpoint import load_checkpoint
from unimoco.pretrain.engine.data import build_train_loader
from unimoco.pretrain.model.unimoco import UniMoCo

WORLD = 2
LOCAL_BATCH = 4
# Two local ranks under torchrun, which starts both again once after a failure.
TORCHRUN_RESTART_ONCE = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc-per-node", "2", "--max-restarts", "1"]  # fmt: skip


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


def test_uneven_data_gives_every_rank_the_same_full_batches():
    """37 images, 2 ranks, 4 per rank: each rank gets 37 // 8 = 4 full batches of distinct
    images (the remainder is dropped, as MoCo does), so no rank waits in a collective for
    another that ran out; resuming at batch 2 gives the same tail."""

    def batches(rank: int, start: int) -> list[list[int]]:
        loader = build_train_loader(list(range(37)), 4, 0, 3, start, 0, rank, 2, default_collate)
        return [batch.tolist() for batch in loader]

    full = [batches(rank, 0) for rank in range(2)]
    assert [len(b) for b in full] == [4, 4] and all(len(x) == 4 for b in full for x in b)
    seen = [i for b in full for x in b for i in x]
    assert len(seen) == len(set(seen)) == 32
    tails = [batches(rank, 2) for rank in range(2)]
    assert tails == [b[2:] for b in full]


def test_torchrun_restarts_a_dead_rank_and_resumes(tmp_path):
    """Two gloo ranks on data that does not divide into global batches; rank 1 dies before step
    6; torchrun --max-restarts 1 starts both again, they resume from the step-4 checkpoint and
    finish with exactly the weights and queue of a run that was never interrupted."""
    out, marker = tmp_path / "run", tmp_path / "died"
    opts = ["DATA.NAME", "shapes", "DATA.SHAPES.NUM_TRAIN", "100", "DATA.SHAPES.IMAGE_SIZE", "24",
            "INPUT.SIZE", "16", "MODEL.ARCH", "resnet18", "MOCO.K", "32", "MOCO.M", "0.99",
            "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "2", "DATA.NUM_WORKERS", "0",
            "CHECKPOINT.PERIOD_STEPS", "2", "LOG.PERIOD", "1", "LOG.TENSORBOARD", "False",
            "LOG.PROGRESS", "off", "OUTPUT_DIR", str(out)]  # fmt: skip
    script = Path(__file__).with_name("_dying_pretrain.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNIMOCO_DIE_AT": "5",
           "UNIMOCO_DIE_MARKER": str(marker)}  # fmt: skip
    done = subprocess.run([*TORCHRUN_RESTART_ONCE, str(script), "--resume", *opts], env=env,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert marker.read_text() == "rank 1 died before step 6\n"
    log = (out / "log.txt").read_text()
    assert "resume: no checkpoint" in log
    assert f"resume: {out / 'checkpoint_last.pth'} at epoch 0, step 4" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["epochs_completed"] == 2  # 100 // 16 per epoch
    resumed = load_checkpoint(out / "checkpoint_final.pth")
    assert resumed["step"] == 12
    assert not (out / "pretrain.lock").exists()

    # The same two ranks without the death end with the same weights, BN statistics and queue.
    uninterrupted_dir = tmp_path / "uninterrupted"
    opts[opts.index("OUTPUT_DIR") + 1] = str(uninterrupted_dir)
    env["UNIMOCO_DIE_AT"] = "-1"
    done = subprocess.run([*TORCHRUN_RESTART_ONCE, str(script), *opts], env=env,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uninterrupted = load_checkpoint(uninterrupted_dir / "checkpoint_final.pth")
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


_DIE_IN_A_COLLECTIVE = """
import os, time, torch
from unimoco.pretrain import distributed as du
attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], int(os.environ["RANK"])
if attempt == "1" and rank == 1:
    time.sleep(2)  # the restarted rank 0 looks up rank 1's address first
du.init_from_env()
for step in range(10):
    if attempt == "0" and rank == 1 and step == 3:
        os._exit(1)  # while rank 0 waits in the all-gather
    du.concat_all_gather(torch.full((2,), float(rank)))
du.barrier()
print(f"attempt {attempt} rank {rank} finished", flush=True)
"""


def test_torchrun_restart_does_not_read_the_dead_attempts_addresses(tmp_path):
    """torchrun keeps its store across restarts; without a per-attempt namespace the restarted
    rank 0 connects to the dead rank 1's gloo address and the restart fails (pytorch#135712)."""
    script = tmp_path / "die_in_a_collective.py"
    script.write_text(_DIE_IN_A_COLLECTIVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*TORCHRUN_RESTART_ONCE, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # The ranks share torchrun's stdout, so their lines can run together.
    assert sorted(re.findall(r"attempt \d rank \d finished", done.stdout)) == [
        "attempt 1 rank 0 finished",
        "attempt 1 rank 1 finished",
    ]


def test_attempt_store_namespaces_one_node_and_warns_across_nodes(monkeypatch):
    base = dist.HashStore()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "5")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    du._attempt_store(base).set("key", "new")
    assert base.check(["unimoco/attempt_3/key"]) and not base.check(["key"])
    assert base.get("unimoco/attempt_3/key") == b"new"

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # two nodes: restart counts are per node
    with pytest.warns(UserWarning, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        assert du._attempt_store(base) is base
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    assert du._attempt_store(base) is base
