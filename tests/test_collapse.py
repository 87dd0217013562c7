"""The collapse monitor: the uniform-similarity value, the key cosine, the warning; why UniCon
from scratch with many labels is drawn to that value, and a real run that sits there."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from unimoco.pretrain.config import ConfigError, load_cfg
from unimoco.pretrain.engine.collapse import CollapseMonitor
from unimoco.pretrain.engine.trainer import PretrainTrainer
from unimoco.pretrain.log_names import LOGGER_NAME
from unimoco.pretrain.losses import (
    info_nce,
    mean_pairwise_cosine,
    unicon,
    unicon_mean_positives,
    uniform_similarity_loss,
)

CPU = torch.device("cpu")
TINY_DIGITS = [
    "DATA.NAME", "digits", "DATA.DIGITS.SIZE", "8", "INPUT.SIZE", "8", "INPUT.AUG", "v1",
    "MODEL.ARCH", "resnet18", "MODEL.CIFAR_STEM", "True", "MOCO.K", "256", "MOCO.M", "0.99",
    "MOCO.BN_SPLITS", "4", "SOLVER.BATCH_SIZE", "64", "DATA.NUM_WORKERS", "0",
    "LOG.PERIOD", "2", "LOG.TENSORBOARD", "False", "LOG.PROGRESS", "off",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


class _Records(logging.Handler):
    """Keeps the records of the logger it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def monitor_warnings():
    """The collapse monitor's warnings, read off the ``unimoco`` logger itself (whatever other
    tests did to its handlers and propagation)."""
    handler = _Records()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_uniform_value_is_the_loss_at_equal_similarities():
    """With every embedding the same point, UniCon and InfoNCE equal log(1 + N_neg·N_pos),
    counted here by hand per query."""
    point = F.normalize(torch.randn(1, 16), dim=1)
    q, k, queue = point.expand(6, 16), point.expand(6, 16), point.expand(40, 16)
    labels = torch.tensor([0, 1, 2, -1, 0, 3])
    queue_labels = torch.tensor([0] * 10 + [1] * 3 + [-1] * 27)
    per_query = []
    for label in labels.tolist():
        queued_positives = int((queue_labels == label).sum()) if label >= 0 else 0
        per_query.append(math.log(1 + (40 - queued_positives) * (1 + queued_positives)))
    expected = sum(per_query) / len(per_query)
    got = uniform_similarity_loss(labels, queue_labels)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert unicon(q, k, queue, labels, queue_labels, 0.2).item() == pytest.approx(expected, 1e-5)
    mean_value = sum(
        math.log(1 + 40 - (int((queue_labels == y).sum()) if y >= 0 else 0))
        for y in labels.tolist()
    ) / len(labels)
    got_mean = uniform_similarity_loss(labels, queue_labels, mean_positives=True)
    assert got_mean.item() == pytest.approx(mean_value, rel=1e-6)
    at_uniform = unicon_mean_positives(q, k, queue, labels, queue_labels, 0.2)
    assert at_uniform.item() == pytest.approx(mean_value, rel=1e-5)
    unlabeled = torch.full_like(labels, -1)
    assert uniform_similarity_loss(unlabeled, queue_labels).item() == pytest.approx(math.log(41))
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(math.log(41), rel=1e-5)


def test_mean_pairwise_cosine_matches_the_pairs():
    keys = F.normalize(torch.randn(9, 5), dim=1)
    cosines = keys @ keys.T
    expected = (cosines.sum() - cosines.diagonal().sum()) / (9 * 8)
    assert mean_pairwise_cosine(keys).item() == pytest.approx(expected.item(), abs=1e-6)
    same = F.normalize(torch.ones(4, 5), dim=1)
    assert mean_pairwise_cosine(same).item() == pytest.approx(1.0, abs=1e-6)


def test_monitor_warns_once_after_a_streak_past_the_warmup(monitor_warnings):
    monitor = CollapseMonitor(tolerance=0.02, windows=3, start_step=10)
    for step in range(2, 12, 2):  # at the uniform value, but inside the warm-up
        monitor.observe(step, 6.93, 6.93, 0.99)
    monitor.observe(12, 6.93, 6.93, 0.99)
    monitor.observe(14, 5.0, 6.93, 0.5)  # a learning window breaks the streak
    monitor.observe(16, 6.95, 6.93, 0.99)
    monitor.observe(18, 6.90, 6.93, 0.99)
    assert not monitor_warnings
    scalars = monitor.observe(20, 6.93, 6.93, 0.97)
    monitor.observe(22, 6.93, 6.93, 0.97)
    assert scalars == {"loss_vs_uniform": 1.0, "key_cosine": 0.97}
    assert len(monitor_warnings) == 1 and "collapse: the keys all point" in monitor_warnings[0]


def test_monitor_fires_on_a_forced_collapse(tmp_path, monitor_warnings):
    """A projection head whose weights are zero maps every image to its bias: the keys collapse,
    the loss sits exactly at log(K + 1), and the run says so once, as a collapse."""
    cfg = load_cfg(
        None,
        [*TINY_DIGITS, "LOSS.NAME", "infonce", "SOLVER.MAX_STEPS", "16", "SOLVER.BASE_LR", "0.0",
         "OUTPUT_DIR", str(tmp_path)],
    )  # fmt: skip
    trainer = PretrainTrainer(cfg, CPU)
    with torch.no_grad():
        for encoder in (trainer.model.encoder_q, trainer.model.encoder_k):
            encoder.fc[-1].weight.zero_()
            encoder.fc[-1].bias.fill_(1.0)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [row for row in rows if "loss_vs_uniform" in row]
    assert logged[-1]["key_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert logged[-1]["loss_vs_uniform"] == pytest.approx(1.0, abs=1e-4)
    warnings = [m for m in monitor_warnings if "collapse monitor" in m]
    assert len(warnings) == 1 and "collapse: the keys all point" in warnings[0]


def test_bad_monitor_and_warmup_options_name_the_key():
    with pytest.raises(ConfigError, match="LOSS.LABEL_WARMUP_EPOCHS = 5; expected fewer"):
        load_cfg(None, ["LOSS.LABEL_WARMUP_EPOCHS", "5", "SOLVER.EPOCHS", "5"])
    with pytest.raises(ConfigError, match="LOG.PLATEAU_TOLERANCE"):
        load_cfg(None, ["LOG.PLATEAU_TOLERANCE", "1.5"])


def test_unicon_with_many_positives_is_lowest_at_collapse_infonce_is_not():
    """Why UniCon from scratch can collapse: for features that do not yet separate the classes
    (one shared direction plus unstructured spread, each query's own key close to it), UniCon
    with every label known is lowest when the spread is zero, i.e. at its uniform value, while
    InfoNCE falls as the spread grows. At equal similarities its gradient pulls each query
    towards the mean of ~K/C same-label keys and gives the own key a weight of only 1/N_pos."""
    torch.manual_seed(0)
    num_keys, batch, dim, temperature = 512, 64, 128, 0.2
    base = F.normalize(torch.randn(dim), dim=0)
    labels, queue_labels = torch.randint(0, 10, (batch,)), torch.randint(0, 10, (num_keys,))
    noise_q, noise_queue = torch.randn(batch, dim), torch.randn(num_keys, dim)
    noise_k = torch.randn(batch, dim)
    uniform_value = uniform_similarity_loss(labels, queue_labels).item()
    unicon_losses, infonce_losses, mean_losses = [], [], []
    for spread in (0.0, 0.2, 0.4):
        q = F.normalize(base + spread * noise_q / 3, dim=1)
        queue = F.normalize(base + spread * noise_queue / 3, dim=1)
        k = F.normalize(q + 0.05 * noise_k / 3, dim=1)
        unicon_losses.append(unicon(q, k, queue, labels, queue_labels, temperature).item())
        infonce_losses.append(info_nce(q, k, queue, temperature).item())
        mean_losses.append(
            unicon_mean_positives(q, k, queue, labels, queue_labels, temperature).item()
        )
    assert unicon_losses[0] == pytest.approx(uniform_value, abs=0.01)
    assert unicon_losses[0] < unicon_losses[1] < unicon_losses[2]
    assert infonce_losses[0] > infonce_losses[1] > infonce_losses[2]
    # Averaged over positives (LOSS.NAME unicon_mean), the loss barely moves with the spread:
    # it does not reward shrinking it.
    rise = unicon_losses[2] - unicon_losses[0]
    assert max(mean_losses) - min(mean_losses) < 0.25 * rise, (mean_losses, unicon_losses)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fully_labeled_unicon_from_scratch_sits_at_its_uniform_value_and_the_monitor_says_so(
    tmp_path, monitor_warnings
):
    """The failure the monitor exists for, reproduced on real digits: fully labeled UniCon from
    scratch at the digits recipe's lr, no warm-up. Once the queue holds real keys (step 4 of
    64 images into K 256) the loss sits at log(1 + N_neg·N_pos) and the run is told so once."""
    cfg = load_cfg(
        None,
        [*TINY_DIGITS, "DATA.LABEL_RATIO", "1.0", "SOLVER.EPOCHS", "2", "SOLVER.BASE_LR", "0.24",
         "SEED", "0", "OUTPUT_DIR", str(tmp_path)],
    )  # fmt: skip
    PretrainTrainer(cfg, CPU).train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    ratios = {row["step"]: row["loss_vs_uniform"] for row in rows if "loss_vs_uniform" in row}
    assert ratios[2] < 0.9, ratios  # the random initial queue is easy to tell apart
    assert all(abs(ratio - 1.0) < 0.02 for step, ratio in ratios.items() if step >= 8), ratios
    warnings = [m for m in monitor_warnings if "collapse monitor" in m]
    assert len(warnings) == 1, warnings
