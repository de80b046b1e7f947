"""Corral's command line: `corral serve` runs the server; the other commands are its gRPC clients.

`corral serve` runs the gRPC server and the REST shim in one process. Either part can run alone:
`--no-http` serves only gRPC; `--no-grpc --grpc-target HOST:PORT` runs only the shim in front of a remote
Corral service.

The client commands (list, ps, show, run, pull, push, cp, rm, stop, embed, create) follow the `ollama`
CLI's verbs, flags and output; each lives in its own module of this package (models, run, transfer,
create) and reaches the server at --grpc-target, else CORRAL_GRPC_TARGET, else OLLAMA_HOST's host on the
gRPC port 50051.
"""

import argparse
import ipaddress
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from corral.store import config

log = logging.getLogger("corral")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args) -> int:
    import shutil
    import tempfile

    from corral.service import observability
    from corral.service.drain import Drain
    from corral.service.metrics import serve_metrics
    from corral.service.server import close_servicer, create_server, limit_malloc_arenas
    from corral.service.tls import ServerTLS
    from corral.store.models import ModelStore

    limit_malloc_arenas()  # before the server threads start
    observability.setup_tracing()  # OTEL_*: before the gRPC server is made (it instruments grpc.server)
    stop = threading.Event()
    grpc_server = servicer = http_server = metrics_server = None
    target = args.grpc_target
    keys = config.api_keys()
    env_cert, env_key, env_ca = config.tls_files()
    cert, key = args.tls_cert or env_cert, args.tls_key or env_key
    tls = ServerTLS.from_options(cert, key, args.tls_client_ca or env_ca)
    drain = Drain()
    socket_dir = None

    if not args.no_grpc:
        from corral.service.registry import keys as registry_keys

        registry_keys.load_or_create()  # like Ollama, the registry identity exists from the first start
        root = config.models_root()
        store = ModelStore(root)
        store.startup_prune()
        address = args.grpc_address or config.grpc_address()
        grpc_server, servicer, port = create_server(store, address, keys=keys, tls=tls, drain=drain)
        host = address.rsplit(":", 1)[0]
        target = target or f"{host}:{port}"
        if tls is not None and not args.no_http:
            # The shim's own hop skips TLS (and mTLS, whose client certificate it could not show) over a
            # Unix socket in a folder only this user can open; keys are still checked on it.
            socket_dir = tempfile.mkdtemp(prefix="corral-")
            target = f"unix:{socket_dir}/grpc.sock"
            grpc_server.add_insecure_port(target)
        grpc_server.start()
        log.info("gRPC listening on %s:%d%s (store %s)", host, port, " with TLS" if tls else "", root)

    if not args.no_http:
        # Imported only here: a gRPC-only server's /metrics shows no REST series.
        from corral.rest_shim.app import create_app
        from corral.rest_shim.client import channel_credentials
        from corral.rest_shim.http import create_http_server, serve_in_thread

        host, port = config.ollama_host(args.http_address)
        credentials = None
        if args.no_grpc and (args.grpc_tls or args.grpc_ca or args.grpc_client_cert):
            credentials = channel_credentials(args.grpc_ca, args.grpc_client_cert, args.grpc_client_key)
        app = create_app(target or config.grpc_target(), loopback=_is_loopback(host), keys=keys,
                         auth_metrics=config.auth_metrics(), forward_auth=bool(keys) or args.no_grpc,
                         credentials=credentials, fallback_key=config.client_api_key())
        http_server = create_http_server(app, host, port, args.http_threads or config.Capacity.from_env().requests,
                                         tls=(cert, key) if tls else None)
        scheme = "https" if tls else "http"
        log.info("REST (Ollama API) listening on %s://%s:%d -> gRPC %s", scheme, host, http_server.bind_addr[1],
                 target)
        serve_in_thread(http_server)

    metrics_address = config.metrics_address()
    if metrics_address is not None:
        metrics_server = serve_metrics(*metrics_address, keys=keys if config.auth_metrics() else None)
        log.info("metrics listening on http://%s:%d/metrics", metrics_address[0], metrics_server.bind_addr[1])

    def _stop(signum, _frame):
        log.info("signal %d: draining", signum)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    # Drain: health NOT_SERVING and new requests refused at once; those in flight get CORRAL_DRAIN_SECONDS.
    drain.begin()
    if http_server is not None:
        http_server.gate.close()
    deadline = time.monotonic() + config.drain_seconds()
    drained = drain.wait(config.drain_seconds())
    if http_server is not None:
        drained = http_server.gate.wait_idle(max(0.0, deadline - time.monotonic())) and drained
    if not drained:
        log.warning("drain time (CORRAL_DRAIN_SECONDS) is up: stopping the requests still in flight")
    # gRPC first: stopping it cancels the calls still running, which ends the REST streams over them, so
    # the HTTP server's workers are free when it stops.
    if grpc_server is not None and servicer is not None:
        grpc_server.stop(grace=0.5 if drained else 0).wait()
        close_servicer(servicer)
    if http_server is not None:
        http_server.stop()
    if metrics_server is not None:
        metrics_server.stop()
    if socket_dir is not None:
        shutil.rmtree(socket_dir, ignore_errors=True)
    observability.shutdown_tracing()  # flushes buffered spans
    log.info("stopped")
    return 0


def _check_tls_options(args) -> None:
    """Reads the TLS files serve will use, so a wrong path stops it at start-up with a clear message."""
    from corral.rest_shim.client import channel_credentials
    from corral.service.tls import ServerTLS

    env_cert, env_key, env_ca = config.tls_files()
    ServerTLS.from_options(args.tls_cert or env_cert, args.tls_key or env_key, args.tls_client_ca or env_ca)
    if args.grpc_client_cert or args.grpc_client_key or args.grpc_ca:
        channel_credentials(args.grpc_ca, args.grpc_client_cert, args.grpc_client_key)


# command -> (module in this package, function); imported only when the command runs
CLIENT_COMMANDS = {
    "list": ("models", "list_models"),
    "ps": ("models", "list_running"),
    "show": ("models", "show"),
    "cp": ("models", "copy"),
    "rm": ("models", "remove"),
    "stop": ("models", "stop"),
    "embed": ("models", "embed"),
    "run": ("run", "run"),
    "pull": ("transfer", "pull"),
    "push": ("transfer", "push"),
}
ALIASES = {"ls": "list"}
ENVIRONMENT = """environment:
  CORRAL_GRPC_TARGET   the server the client commands talk to (default: OLLAMA_HOST's host, port 50051)
  OLLAMA_HOST          REST address of `corral serve` (default 127.0.0.1:11434)
  CORRAL_GRPC_ADDRESS  gRPC listen address of `corral serve` (default 127.0.0.1:50051)
  OLLAMA_MODELS        the model store of `corral serve` (default ~/.ollama/models)
  CORRAL_API_KEYS      bearer keys `corral serve` requires (comma-separated; or CORRAL_API_KEYS_FILE)
  CORRAL_API_KEY       the key clients send (the client commands, a shim-only serve)
  CORRAL_METRICS_ADDRESS  HOST:PORT of a separate /metrics listener
  CORRAL_DRAIN_SECONDS how long requests in flight may finish after SIGTERM (default 30)
"""


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from corral.service.version import OLLAMA_COMPAT_VERSION

    try:
        own = version("corral")
    except PackageNotFoundError:
        own = "unknown"
    return f"corral version {own}\nOllama API version {OLLAMA_COMPAT_VERSION}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral", description=__doc__.splitlines()[0], epilog=ENVIRONMENT,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--version", action="store_true", help="show version information and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("serve", help="run the gRPC server and the Ollama REST shim")
    p.add_argument("--grpc-address", default=None,
                   help=f"gRPC listen address (env CORRAL_GRPC_ADDRESS, default {config.DEFAULT_GRPC_ADDRESS})")
    p.add_argument("--http-address", default=None,
                   help="REST listen address (default: OLLAMA_HOST, else 127.0.0.1:11434)")
    p.add_argument("--grpc-target", default=None,
                   help="gRPC service the shim talks to (with --no-grpc; env CORRAL_GRPC_TARGET)")
    p.add_argument("--no-grpc", action="store_true", help="run only the REST shim")
    p.add_argument("--no-http", action="store_true", help="run only the gRPC server")
    p.add_argument("--tls-cert", default="", metavar="FILE",
                   help="serve gRPC and REST with TLS: certificate chain, PEM (env CORRAL_TLS_CERT)")
    p.add_argument("--tls-key", default="", metavar="FILE",
                   help="the certificate's private key, PEM (env CORRAL_TLS_KEY)")
    p.add_argument("--tls-client-ca", default="", metavar="FILE",
                   help="mutual TLS for gRPC: require client certificates signed by this CA (env CORRAL_TLS_CLIENT_CA)")
    p.add_argument("--grpc-tls", action="store_true", help="with --no-grpc: reach --grpc-target over TLS")
    p.add_argument("--grpc-ca", default="", metavar="FILE",
                   help="with --no-grpc: CA that signed --grpc-target's certificate (implies --grpc-tls)")
    p.add_argument("--grpc-client-cert", default="", metavar="FILE",
                   help="with --no-grpc: the shim's certificate for a target that requires mutual TLS")
    p.add_argument("--grpc-client-key", default="", metavar="FILE", help="the key of --grpc-client-cert")
    p.add_argument("--http-threads", type=int, default=None,
                   help="REST requests served at once, streams included; more get 503 at once "
                        "(default: as many as the gRPC server admits, OLLAMA_MAX_QUEUE + running + "
                        "CORRAL_MAX_OTHER_REQUESTS)")

    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--grpc-target", default=None, metavar="HOST:PORT",
                        help="gRPC server (default: CORRAL_GRPC_TARGET, else OLLAMA_HOST's host, port 50051)")

    def client(name: str, help_text: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              parents=[target], **kwargs)

    c = client("create", "create a model from a Modelfile on a running server")
    c.add_argument("name")
    c.add_argument("-f", "--file", default="Modelfile", help="Modelfile path (default %(default)s)")
    c.add_argument("-q", "--quantize", default="", help="quantize to this type, e.g. q4_K_M")

    c = client("show", "show information for a model")
    c.add_argument("model")
    for field in ("license", "modelfile", "parameters", "template"):
        c.add_argument(f"--{field}", action="store_true", help=f"show the {field} of the model")
    c.add_argument("--system", action="store_true", help="show the system message of the model")
    c.add_argument("-v", "--verbose", action="store_true", help="show detailed model information (metadata, tensors)")

    c = client("run", "run a model: answer PROMPT, or chat interactively without one")
    c.add_argument("model")
    c.add_argument("prompt", nargs="*", help="the prompt (text on standard input is put before it)")
    c.add_argument("--format", default="", help="response format (e.g. json)")
    c.add_argument("--keepalive", default=None, help="duration to keep the model loaded (e.g. 5m)")
    c.add_argument("--verbose", action="store_true", help="show timings for the response")
    c.add_argument("--think", nargs="?", const="true", default=None, choices=["true", "false", "low", "medium", "high"],
                   help="let a thinking model think (true/false, or a level: low, medium, high)")
    c.add_argument("--hidethinking", action="store_true", help="think, but do not show the thinking")
    c.add_argument("--insecure", action="store_true", help="use an insecure registry if the model is pulled")

    c = client("stop", "stop a running model (unload it)")
    c.add_argument("model")

    for verb, where in (("pull", "from"), ("push", "to")):
        c = client(verb, f"{verb} a model {where} a registry")
        c.add_argument("model")
        c.add_argument("--insecure", action="store_true", help="use an insecure registry (plain HTTP)")

    c = client("list", "list models", aliases=["ls"])
    c.add_argument("prefix", nargs="?", default="", help="only models whose name starts with this")

    c = client("ps", "list running models")
    c.add_argument("prefix", nargs="?", default="", help="only models whose name starts with this")

    c = client("cp", "copy a model")
    c.add_argument("source")
    c.add_argument("destination")

    c = client("rm", "remove models (each is unloaded first)")
    c.add_argument("models", nargs="+", metavar="model")

    c = client("embed", "embed texts with a model and print the vectors as JSON")
    c.add_argument("model")
    c.add_argument("text", nargs="*", help="texts to embed, one vector each (default: standard input)")
    c.add_argument("--dimensions", type=int, default=0, help="keep only the first N dimensions")
    c.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=None,
                   help="cut inputs longer than the context (the server's default is to cut)")
    c.add_argument("--keepalive", default=None, help="duration to keep the model loaded (e.g. 5m)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # Flags may come after the words of a prompt or text, as with cobra: `corral embed m a --dimensions 4 b`
    spill = {"run": "prompt", "embed": "text"}.get(args.command or "")
    if extras and spill and not any(e.startswith("-") for e in extras):
        getattr(args, spill).extend(extras)
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.version:
        sys.stdout.write(version_text())
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    from corral.service.observability import configure_logging

    configure_logging(logging.DEBUG if config.debug() else logging.INFO)  # CORRAL_LOG_FORMAT, request ids
    if args.command == "serve":
        if args.no_grpc and args.no_http:
            parser.error("--no-grpc and --no-http leave nothing to run")
        try:
            config.check_all()
            _check_tls_options(args)
        except ValueError as exc:  # ConfigError, TLSError: a message naming the variable or file
            parser.error(str(exc))
        return serve(args)
    if args.command == "create":
        from corral.service.cli.client import print_error, resolve_target
        from corral.service.cli.create import run_create

        try:
            target = resolve_target(args.grpc_target)
        except config.ConfigError as exc:
            print_error(str(exc))
            return 1
        return run_create(target, args.name, Path(args.file), args.quantize)
    import importlib

    from corral.service.cli.client import run_command

    module, function = CLIENT_COMMANDS[ALIASES.get(args.command, args.command)]
    handler = getattr(importlib.import_module(f"corral.service.cli.{module}"), function)
    return run_command(lambda client: handler(client, args), args.grpc_target)


if __name__ == "__main__":
    sys.exit(main())
