"""The collapse monitor: tells a pretraining that learns from one stuck at uniform similarities.

A contrastive loss that sits at its uniform-similarity value (``log(K + 1)`` for InfoNCE,
``log(1 + N_neg·N_pos)`` for UniCon) means the similarities carry no information: either every
image maps to one point (collapse: the keys' mean pairwise cosine near 1) or the features are
spread but unrelated to the positives (plateau). The loss alone cannot tell learning from either,
so the monitor logs the ratio of the loss to that value and the key cosine, and warns once when
the ratio stays within ``tolerance`` of 1 for ``windows`` log periods in a row after the warm-up.
"""

from __future__ import annotations

import logging

from ..log_names import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

# Mean pairwise key cosine above which a run at the uniform value is a collapse, not a plateau.
COLLAPSED_COSINE = 0.9


class CollapseMonitor:
    """Watches the logged loss ratio; ``observe`` returns the scalars to log and warns once."""

    def __init__(self, tolerance: float, windows: int, start_step: int) -> None:
        self.tolerance = tolerance
        self.windows = windows
        self.start_step = start_step
        self.streak = 0
        self.warned = False

    def observe(
        self, step: int, loss: float, uniform_loss: float, key_cosine: float
    ) -> dict[str, float]:
        """Scalars for this log step (``loss_vs_uniform``, ``key_cosine``); warns on a streak."""
        ratio = loss / uniform_loss if uniform_loss > 0 else float("nan")
        at_uniform = abs(ratio - 1.0) <= self.tolerance
        self.streak = self.streak + 1 if at_uniform and step > self.start_step else 0
        if self.windows and self.streak >= self.windows and not self.warned:
            self.warned = True
            kind = (
                "collapse: the keys all point the same way"
                if key_cosine > COLLAPSED_COSINE
                else "plateau: the features are spread but do not tell positives from negatives"
            )
            logger.warning(
                "collapse monitor: at step %d the contrastive loss %.4g has stayed within %.0f%% "
                "of its uniform-similarity value %.4g for %d log periods (key cosine %.3f): %s. "
                "The encoder is learning nothing a classifier can use; try a longer warm-up "
                "(SOLVER.WARMUP_EPOCHS), a lower lr, or for UniCon with many labels "
                "LOSS.LABEL_WARMUP_EPOCHS (docs/methods.md).",
                step,
                loss,
                100 * self.tolerance,
                uniform_loss,
                self.streak,
                key_cosine,
                kind,
            )
        return {"loss_vs_uniform": ratio, "key_cosine": key_cosine}
