"""A tqdm progress bar shown only where someone is watching (a terminal), or when asked."""

from __future__ import annotations

import sys

from tqdm import tqdm

from .. import distributed as du


class ProgressBar:
    """Wraps ``tqdm``; ``mode`` is auto (stderr is a terminal), on or off."""

    def __init__(self, total: int, initial: int, mode: str = "auto") -> None:
        show = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self._bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            if show and du.is_main_process()
            else None
        )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
