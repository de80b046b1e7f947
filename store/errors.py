"""Domain errors shared by every layer.

Each error carries the exact Ollama error text (clients match on these strings) and names the canonical
status code it stands for. The gRPC layer turns `code` into a grpc.StatusCode in one place
(service/status.py) and the REST shim turns that into an HTTP status, so no layer below needs to know
about either protocol.
"""


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
    """Out of disk or memory (HTTP 507-like; mapped to 500 by the shim)."""

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
