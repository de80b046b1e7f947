"""Domain errors shared by every layer.

Each error carries the exact Ollama error text (clients match on these strings) and names the canonical
status code it stands for. The gRPC layer turns `code` into a grpc.StatusCode in one place
(service/status.py) and the REST shim turns that into an HTTP status, so no layer below needs to know
about either protocol.
"""

import errno


class CorralError(Exception):
    """Base class: `code` is a grpc.StatusCode name, `message` the exact user-facing text."""

    code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(CorralError):
    """Bad input from the caller (HTTP 400)."""

    code = "INVALID_ARGUMENT"


class NotFound(CorralError):
    """A model, blob or file that does not exist (HTTP 404)."""

    code = "NOT_FOUND"


class FailedPrecondition(CorralError):
    """The request is valid but the model cannot serve it, e.g. no completion capability (HTTP 400)."""

    code = "FAILED_PRECONDITION"


class Unavailable(CorralError):
    """Temporarily unable to serve, e.g. the queue is full or a registry is unreachable (HTTP 503)."""

    code = "UNAVAILABLE"


class ResourceExhausted(CorralError):
    """Out of disk or memory. A full disk says NO_SPACE in its text (Go's wording, as Ollama reports it),
    which the shim answers with 507 Insufficient Storage (rest_shim/errors.py)."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(CorralError):
    """A registry refused our credentials (HTTP 401)."""

    code = "UNAUTHENTICATED"


class Cancelled(CorralError):
    """The client went away or cancelled (HTTP 499)."""

    code = "CANCELLED"


class Internal(CorralError):
    """Anything that is our fault or the model file's (HTTP 500)."""

    code = "INTERNAL"


NO_SPACE = "no space left on device"


def is_disk_full(exc: BaseException) -> bool:
    """An OSError that means the filesystem (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def no_space(path: object) -> ResourceExhausted:
    """The error for a write that found the disk full, worded as Go's (and so Ollama's) write error."""
    return ResourceExhausted(f"write {path}: {NO_SPACE}")
