"""The detection progress bar: shown in a terminal, counting iterations; silent otherwise."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from unimoco.transfer.progress import ProgressHook


def _run_hook(iterations: int) -> None:
    hook = ProgressHook()
    hook.trainer = SimpleNamespace(max_iter=iterations, start_iter=0)
    hook.before_train()
    for _ in range(iterations):
        hook.after_step()
    hook.after_train()


def test_bar_counts_iterations_in_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _run_hook(3)
    err = capsys.readouterr().err
    assert "detect" in err and "3/3" in err


def test_no_bar_without_a_terminal(capsys):
    _run_hook(3)
    assert capsys.readouterr().err == ""
