"""The front end every ``unimoco`` command shares: parse, load the config, lock the output
directory, run, and turn known exceptions into exit statuses, the same way for every command.

Every error goes to stderr as ``unimoco CMD: reason``; one during the run also goes to the
command's logger, so that the run's log file records it. Bad input exits with 2 unless the
command maps it otherwise; a run stopped by a signal exits with 128 + the signal number
(``Preempted``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fvcore.common.config import CfgNode

from .. import distributed as du
from ..config import ConfigError, load_cfg
from ..log_names import LOGGER_NAME
from .preemption import Preempted
from .run_lock import RunLockError, lock_on_main


class ArgumentError(ValueError):
    """A command-line argument outside its range."""


# Bad input for every command (exit status 2 unless a command maps it otherwise).
INPUT_ERRORS: dict[type[Exception], int] = {ConfigError: 2, ArgumentError: 2, RunLockError: 2}


def config_file_help(what: str) -> str:
    """``--config-file``'s help: ``what`` it names, and the two forms it takes."""
    return f"{what}: a YAML file or a built-in config's name ('unimoco configs' lists them)"


def config_parser(
    prog: str, description: str, epilog: str | None = None, config_of: str = "the config"
) -> argparse.ArgumentParser:
    """A parser with the arguments every config-driven command takes: ``--config-file FILE``
    (``config_of`` says whose config it is) and trailing ``KEY VALUE`` overrides (``opts``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument(
        "--config-file", default=None, metavar="FILE", help=config_file_help(config_of)
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE pairs"
    )
    return parser


def load_pretrain_cfg(args: argparse.Namespace) -> CfgNode:
    """The pretraining config named by ``--config-file`` with the ``opts`` overrides."""
    return load_cfg(args.config_file, args.opts)


@dataclass(frozen=True)
class Command:
    """One ``unimoco`` subcommand: ``load(args)`` gives its config (with ``OUTPUT_DIR`` when
    ``lock_file`` is set), ``run(args, cfg)`` its exit status; ``statuses`` maps the command's own
    exceptions to exit statuses (checked before :data:`INPUT_ERRORS`, first match wins)."""

    name: str
    parser: argparse.ArgumentParser
    load: Callable[[argparse.Namespace], Any]
    run: Callable[[argparse.Namespace, Any], int]
    lock_file: str | None = None
    statuses: Mapping[type[Exception], int] = field(default_factory=dict)
    # Join torchrun's process group before taking the lock, so that only rank 0 holds it.
    torchrun: bool = False
    logger_name: str = LOGGER_NAME

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv``, load, lock, run; the exit status."""
        args = self.parser.parse_args(argv)
        try:
            cfg = self.load(args)
            if self.torchrun:
                du.init_from_env()
            lock = lock_on_main(cfg.OUTPUT_DIR, self.lock_file) if self.lock_file else None
        except Exception as err:
            status = self.status(err)
            if status is None:
                raise
            print(f"unimoco {self.name}: {err}", file=sys.stderr)
            return status
        try:
            return self.run(args, cfg)
        except Preempted as err:
            self.report(err, logging.WARNING)
            return err.exit_code
        except Exception as err:
            status = self.status(err)
            if status is None:
                raise
            self.report(err, logging.ERROR)
            return status
        finally:
            if lock is not None:
                lock.release()

    def report(self, err: BaseException, level: int) -> None:
        """An error (or a stop) during the run: to the command's log and to stderr."""
        logging.getLogger(self.logger_name).log(level, "unimoco %s: %s", self.name, err)
        print(f"unimoco {self.name}: {err}", file=sys.stderr)

    def status(self, err: Exception) -> int | None:
        """The exit status for ``err``, or None when it is not a known failure (a bug)."""
        for kind, status in [*self.statuses.items(), *INPUT_ERRORS.items()]:
            if isinstance(err, kind):
                return status
        return None
