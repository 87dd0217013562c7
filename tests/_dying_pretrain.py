"""``unimoco pretrain`` under torchrun, where rank 1 dies once (``os._exit``) before a step.

Used by tests/test_distributed.py: UNIMOCO_DIE_AT is the step, UNIMOCO_DIE_MARKER a file that
records the death so that the restarted rank 1 lives.
"""

import os
import sys
from pathlib import Path

import torch

from unimoco.pretrain.engine.launch import main
from unimoco.pretrain.engine.trainer import PretrainTrainer

_train_step = PretrainTrainer.train_step


def _dying_train_step(self, images, labels):
    marker = Path(os.environ["UNIMOCO_DIE_MARKER"])
    if self.rank == 1 and self.state.step == int(os.environ["UNIMOCO_DIE_AT"]):
        if not marker.exists():
            marker.write_text(f"rank 1 died before step {self.state.step + 1}\n")
            os._exit(1)
    return _train_step(self, images, labels)


if __name__ == "__main__":
    torch.set_num_threads(1)
    PretrainTrainer.train_step = _dying_train_step
    sys.exit(main(sys.argv[1:]))
