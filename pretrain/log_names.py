"""The name of the ``unimoco`` logger, importable from every layer without pulling in the engine."""

LOGGER_NAME = "unimoco"
