"""Preemption: SIGTERM / SIGINT become a request to checkpoint at the next step boundary and exit.

Clusters preempt a job with SIGTERM and kill it with SIGKILL after a grace period. While a
:class:`StopSignal` is active, a first SIGTERM or SIGINT only records the request; the training
loop reads it between steps, writes a checkpoint and raises :class:`Preempted`, and the command
exits with 128 + the signal number (the status of a process killed by that signal), so that
``--resume`` continues where it stopped. A second signal acts at once, as without the handler.
DataLoader workers ignore both signals (:func:`ignore_stop_signals`): the main process ends them.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch
import torch.distributed as dist

from .. import distributed as du

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(BaseException):
    """Training stopped on a signal after writing its checkpoint; ``--resume`` continues.

    A ``BaseException``, as ``KeyboardInterrupt``: a requested stop, not a failure, so that
    ``except Exception`` handlers (detectron2's trainer logs those as crashes) let it through.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as for a process the signal killed."""
        return 128 + self.signum


class StopSignal:
    """While entered, SIGTERM and SIGINT set :attr:`signum` instead of ending the process.

    The handler only stores the number (nothing that takes a lock, such as logging, runs inside
    a signal handler); off the main thread, where Python cannot install handlers, it is inert.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def number(self) -> int:
        """The signal received (SIGTERM when the stop came from another rank)."""
        return self.signum or signal.SIGTERM

    @property
    def name(self) -> str:
        return signal.Signals(self.number).name

    def install(self) -> None:
        """Catch the stop signals (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers found by :meth:`install`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignal:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self.restore()
        signal.raise_signal(signum)


def stop_agreed(requested: bool, device: torch.device) -> bool:
    """Whether any rank asked to stop (one small all-reduce under torchrun), so that every rank
    stops at the same step; the local request on one process."""
    if not du.is_distributed():
        return requested
    flag = torch.tensor([int(requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a signal sent to the whole process group must not kill the
    workers mid-epoch (the main process would fail on the lost worker before checkpointing)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
