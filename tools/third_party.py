"""Known, harmless messages that third-party code prints on every run of a command, silenced by
their exact text so that the terminal keeps what a user can act on.

Installed by the ``unimoco`` command only: importing the library changes no filter. Each entry
names where it comes from; anything else still shows.
"""

from __future__ import annotations

import functools
import logging
import warnings

# (category, start of the message): warnings.warn calls in code the user cannot change.
_WARNINGS = (
    # detectron2 and fvcore decorate functions with torch.jit.script at import (torch >= 2.10)
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # detectron2's anchor generator calls torch.meshgrid without indexing=
    (UserWarning, r"torch\.meshgrid: in an upcoming release"),
)
# logger -> start of the message: records torch logs once per process.
_LOG_RECORDS = {
    # on machines without a GPU, when detectron2 imports torch.utils.cpp_extension
    "torch.utils.cpp_extension": "No CUDA runtime is found",
    # when detectron2's models call torch.fx.is_fx_tracing()
    "torch.fx._symbolic_trace": "is_fx_tracing will return true",
}


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@functools.cache
def quiet_known_warnings() -> None:
    """Silence the messages above (once per process)."""
    for category, message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefix in _LOG_RECORDS.items():
        logging.getLogger(name).addFilter(_DropMessage(prefix))
