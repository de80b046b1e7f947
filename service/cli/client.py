"""The gRPC connection of the client commands, and how their failures reach the user.

Why one place: every client command (list, show, run, pull, ...) talks to the same server and fails the
same ways, and the Ollama CLI's habit is one line "Error: <message>" on stderr and exit code 1. A server
error carries Ollama's exact text as the gRPC status message, so that text is printed as it is; a server
that cannot be reached gets a message naming the address and how to start one, instead of gRPC's
"failed to connect to all addresses" details.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

from corral.protos.ollama.v1 import ollama_pb2_grpc as pb_grpc
from corral.service.call_metadata import MetadataInterceptor
from corral.store import config
from corral.store.errors import CorralError

# Show with --verbose can return whole vocabularies in model_info; the default 4 MiB limit is too small.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
EXIT_INTERRUPTED = 130  # a shell's code for a command stopped by Ctrl-C


class CliError(Exception):
    """A failure worded for the user; printed as "Error: <message>"."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Authorization(MetadataInterceptor):
    """Adds `authorization: Bearer <CORRAL_API_KEY>` to every call."""

    def __init__(self, key: str):
        self.entry = ("authorization", f"Bearer {key}")

    def entries(self, message: Any) -> list[tuple[str, str]]:
        return [self.entry]


class Client:
    """One channel and stub to the server; a context manager that closes the channel."""

    def __init__(self, target: str):
        self.target = target
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        key = config.client_api_key()
        if key:  # a server with CORRAL_API_KEYS: send ours on every call
            self.channel = grpc.intercept_channel(self.channel, _Authorization(key))
        self.stub = pb_grpc.OllamaStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()


def resolve_target(flag: str | None) -> str:
    """--grpc-target, else CORRAL_GRPC_TARGET, else OLLAMA_HOST's host on the gRPC port, else 127.0.0.1:50051."""
    return flag or config.cli_grpc_target()


def is_connection_error(err: grpc.RpcError) -> bool:
    """True when the server could not be reached at all (not when it answered UNAVAILABLE itself)."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (err.details() or "").lower()
    return any(text in details for text in (
        "failed to connect", "connection refused", "dns resolution failed", "name resolution",
        "connection reset", "socket closed", "empty address list", "no route to host",
    ))


def error_message(err: BaseException, target: str) -> str:
    """The text after "Error: " for a failure of a client command."""
    if isinstance(err, grpc.RpcError):
        if is_connection_error(err):
            return f"could not connect to corral server at {target}, run 'corral serve' to start it"
        return err.details() or err.code().name.lower()
    if isinstance(err, (CliError, CorralError)):
        return err.message
    if isinstance(err, config.ConfigError):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}"
    return str(err)


def print_error(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr, flush=True)


def run_command(handler: Callable[[Client], int | None], target_flag: str | None) -> int:
    """Runs one client command: connects, calls handler(client), maps failures to "Error: ..." and exit 1."""
    target = "the configured address"
    try:
        target = resolve_target(target_flag)
        with Client(target) as client:
            return handler(client) or 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `corral list | head`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 1
    except (grpc.RpcError, CliError, CorralError, config.ConfigError, OSError) as err:
        print_error(error_message(err, target))
        return 1
