"""Exceptions raised by edgemerge. Every message names the problem and where it is."""


class EdgemergeError(Exception):
    """Base class of every error edgemerge reports to a user."""


class UnsupportedLayerError(EdgemergeError):
    """A source model uses a layer the importer cannot express."""


class ModelFormatError(EdgemergeError):
    """A source model file is missing, unreadable or not a supported kind."""


class AlignmentError(EdgemergeError):
    """A requested layer alignment is invalid."""


class EmmFormatError(EdgemergeError):
    """An `.emm` file is corrupt, truncated, or of a version this reader does not support.
    `status` is the C runtime's em_status code when the C loader found the problem, else None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RuntimeStatusError(EdgemergeError):
    """The C runtime returned a non-OK status; `status` is the em_status code (format.Status)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
