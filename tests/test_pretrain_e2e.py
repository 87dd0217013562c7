"""Short pretraining runs on generated shapes: the loss falls, resume is exact, errors are clear."""

import json

import pytest
import torch

from unimoco.cli import main as cli_main
from unimoco.pretrain.checkpoint import load_checkpoint
from unimoco.pretrain.config import load_cfg
from unimoco.pretrain.data.datasets import build_dataset
from unimoco.pretrain.data.transforms import build_pretrain_transform
from unimoco.pretrain.engine.trainer import PretrainTrainer
from unimoco.pretrain.model.unimoco import UniMoCo

TINY = [
    "DATA.NAME", "shapes",
    "DATA.SHAPES.NUM_TRAIN", "192",
    "DATA.SHAPES.IMAGE_SIZE", "32",
    "INPUT.SIZE", "32",
    "MODEL.ARCH", "resnet18",
    "MODEL.CIFAR_STEM", "False",
    "MOCO.K", "64",
    "MOCO.M", "0.99",
    "MOCO.BN_SPLITS", "4",
    "SOLVER.BATCH_SIZE", "32",
    "DATA.NUM_WORKERS", "0",
    "LOG.PERIOD", "1",
    "LOG.TENSORBOARD", "False",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def test_training_steps_lower_the_loss():
    """The model, its optimizer and its queue together minimise the loss: on six fixed batches
    of shapes crops (half of them labeled), the loss once the queue is full falls clearly."""
    cfg = load_cfg(None, TINY)
    dataset = build_dataset(cfg, "train", build_pretrain_transform(cfg))
    torch.manual_seed(0)
    items = [dataset[i] for i in range(192)]
    x_q = torch.stack([views[0] for views, _ in items])
    x_k = torch.stack([views[1] for views, _ in items])
    labels = torch.tensor([target if i % 2 else -1 for i, (_, target) in enumerate(items)])
    model = UniMoCo("resnet18", dim=128, queue_size=64, momentum=0.99, bn_splits=4)
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=0.01, momentum=0.9)
    history = []
    for step in range(60):
        batch = slice(32 * (step % 6), 32 * (step % 6 + 1))
        out = model(x_q[batch], x_k[batch], labels[batch])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.enqueue(out["keys"], out["labels"])
        history.append(out["loss"].item())
    early, late = sum(history[6:12]) / 6, sum(history[-6:]) / 6
    assert late < early - 0.3, (early, late)


def test_short_pretrain_writes_its_outputs(tmp_path):
    out = tmp_path / "run"
    opts = TINY + ["OUTPUT_DIR", str(out), "SOLVER.EPOCHS", "3",
                   "DATA.LABEL_RATIO", "0.5"]  # fmt: skip
    assert cli_main(["pretrain", *opts]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 * (192 // 32) and metrics["epochs_completed"] == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 19))
    assert all({"loss", "lr", "img_per_s", "data_time"} <= set(line) for line in lines)
    labeled = (out / "labeled_subset.txt").read_text().split()
    assert len(labeled) == 100  # 8 classes of 19 images and 2 of 20: half of each, rounded up
    assert (out / "config.yaml").is_file() and "Non-existent" not in (out / "log.txt").read_text()
    # The queue holds real keys and the labels of the labeled images it saw.
    final = load_checkpoint(out / "checkpoint_final.pth")["model"]
    assert (final["queue_labels"] >= 0).any() and (final["queue_labels"] == -1).any()


def _train(opts, interrupt_at=None, resume=False):
    cfg = load_cfg(None, opts)
    trainer = PretrainTrainer(cfg, torch.device("cpu"))
    if resume:
        assert trainer.resume()
    if interrupt_at is not None:
        step = trainer.train_step

        def dying_step(*args):
            if trainer.state.step == interrupt_at:
                raise KeyboardInterrupt
            return step(*args)

        trainer.train_step = dying_step
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
        return None
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("optimizer", "pipeline"), [("sgd", "cpu"), ("adamw", "cpu"), ("sgd", "gpu")]
)
def test_stop_and_resume_equals_uninterrupted_run(tmp_path, optimizer, pipeline):
    """Mid-epoch resume gives the uninterrupted run's weights, queue and optimizer state, with
    2 loader workers in one run and none in the other; on both data paths (the GPU one runs
    its ops on CPU tensors here)."""
    common = TINY + ["SOLVER.EPOCHS", "2", "DATA.LABEL_RATIO", "0.3", "CO2.ENABLED", "True",
                     "CHECKPOINT.PERIOD_STEPS", "4", "LOG.PERIOD", "5",
                     "SOLVER.OPTIMIZER", optimizer, "DATA.PIPELINE", pipeline]  # fmt: skip
    full = _train(common + ["OUTPUT_DIR", str(tmp_path / "full"), "DATA.NUM_WORKERS", "2"])
    resumed_opts = common + ["OUTPUT_DIR", str(tmp_path / "resumed")]
    # Killed in epoch 1 (6 steps per epoch) after the step-8 checkpoint: resumes mid-epoch.
    _train(resumed_opts, interrupt_at=10)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pth")["step"] == 8
    resumed = _train(resumed_opts, resume=True)
    assert resumed.state.step == full.state.step == 12
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys() and opt_a
    for idx in opt_a:
        assert opt_a[idx].keys() == opt_b[idx].keys()  # momentum_buffer | step, exp_avg(_sq)
        for name in opt_a[idx]:
            assert torch.equal(opt_a[idx][name], opt_b[idx][name]), (idx, name)


def _cli_error(capsys, *opts):
    code = cli_main(["pretrain", *opts])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_bad_input_errors_name_the_culprit(tmp_path, capsys):
    code, text = _cli_error(capsys, "DATA.ROOT", str(tmp_path / "nowhere"), "OUTPUT_DIR",
                            str(tmp_path / "o1"))  # fmt: skip
    assert code == 2 and "nowhere" in text
    code, text = _cli_error(capsys, "MOCO.QUEUE", "3")
    assert code == 2 and "MOCO.QUEUE" in text
    listed = tmp_path / "labeled.txt"
    listed.write_text("circle/000001.png\nno_such_class/missing.png\n")
    code, text = _cli_error(capsys, *TINY, "DATA.LABELED_LIST", str(listed), "OUTPUT_DIR",
                            str(tmp_path / "o2"))  # fmt: skip
    assert code == 2 and "no_such_class/missing.png" in text
    code, text = _cli_error(capsys, *TINY, "MOCO.K", "4096", "OUTPUT_DIR", str(tmp_path / "o3"))
    assert code == 2 and "MOCO.K = 4096" in text and "MOCO.K <= 160" in text
    # The symmetric loss queues two keys per image: the queue may span twice as many keys.
    code, text = _cli_error(capsys, *TINY, "MOCO.K", "4096", "LOSS.SYMMETRIC", "True",
                            "OUTPUT_DIR", str(tmp_path / "o4"))  # fmt: skip
    assert code == 2 and "MOCO.K <= 320" in text


def test_corrupt_image_is_skipped_and_counted(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    for c in range(2):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(20):
            colour = (40 * i % 255, 100 * c, 7 * i % 255)
            Image.new("RGB", (32, 32), colour).save(root / f"class{c}" / f"{i}.png")
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "run"
    opts = ["DATA.ROOT", str(root), "OUTPUT_DIR", str(out), "INPUT.SIZE", "32",
            "MODEL.ARCH", "resnet18", "MOCO.K", "16", "MOCO.BN_SPLITS", "2",
            "SOLVER.BATCH_SIZE", "8", "SOLVER.EPOCHS", "1", "DATA.NUM_WORKERS", "0",
            "DATA.MAX_BAD_FRACTION", "0.2", "LOG.TENSORBOARD", "False"]  # fmt: skip
    assert cli_main(["pretrain", *opts]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 41 // 8 and metrics["bad_images"] == 1
    assert "broken.png" in (out / "log.txt").read_text()
    # The same data with no tolerance for bad files stops with a clear error.
    code = cli_main(
        ["pretrain", *opts, "DATA.MAX_BAD_FRACTION", "0.0", "OUTPUT_DIR", str(tmp_path / "o")]
    )
    assert code == 2
