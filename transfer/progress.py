"""A tqdm bar over detectron2's training iterations, shown where someone is watching (stderr is a
terminal), like the pretraining bar."""

from __future__ import annotations

import sys

from detectron2.engine import HookBase
from detectron2.utils import comm
from tqdm import tqdm


class ProgressHook(HookBase):
    """Advances a bar after every iteration; closed before the final evaluation."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def before_train(self) -> None:
        if sys.stderr.isatty() and comm.is_main_process():
            trainer = self.trainer
            self._bar = tqdm(
                total=trainer.max_iter,
                initial=trainer.start_iter,
                unit="it",
                desc="detect",
                dynamic_ncols=True,
            )

    def after_step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
