"""The transfer code's input errors (each names the data set, file or key at fault)."""


class DatasetError(ValueError):
    """A data set that is not registered or whose files are missing; names both."""
