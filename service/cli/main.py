"""`corral` command line: `corral serve` runs the gRPC server and the REST shim in one process.

Either part can run alone: `--no-http` serves only gRPC; `--no-grpc --grpc-target HOST:PORT` runs only
the shim in front of a remote Corral service.
"""

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("corral")

DEFAULT_GRPC = "127.0.0.1:50051"


def ollama_host(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST as Ollama reads it: [http(s)://]host[:port][/path], default 127.0.0.1:11434."""
    value = (value or "").strip().strip("\"'")
    if not value:
        return "127.0.0.1", 11434
    scheme_given = "://" in value
    parts = urlsplit(value if scheme_given else "http://" + value)
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 11434) if scheme_given else 11434
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or default_port


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip().strip("\"'") or default


def serve(args) -> int:
    from corral.rest_shim.app import create_app
    from corral.rest_shim.http import create_http_server, serve_in_thread
    from corral.service.server import close_servicer, create_server
    from corral.store.models import ModelStore
    from corral.store.paths import default_root

    stop = threading.Event()
    grpc_server = servicer = http_server = None
    target = args.grpc_target

    if not args.no_grpc:
        from corral.service.registry import keys

        keys.load_or_create()  # like Ollama, the registry identity exists from the first start
        root = default_root()
        store = ModelStore(root)
        store.startup_prune()
        grpc_server, servicer, port = create_server(store, args.grpc_address)
        grpc_server.start()
        host = args.grpc_address.rsplit(":", 1)[0]
        target = target or f"{host}:{port}"
        log.info("gRPC listening on %s:%d (store %s)", host, port, root)

    if not args.no_http:
        host, port = ollama_host(args.http_address or os.environ.get("OLLAMA_HOST"))
        app = create_app(target or _env("CORRAL_GRPC_TARGET", DEFAULT_GRPC), loopback=_is_loopback(host))
        http_server = create_http_server(app, host, port, args.http_threads)
        log.info("REST (Ollama API) listening on http://%s:%d -> gRPC %s", host, http_server.bind_addr[1], target)
        serve_in_thread(http_server)

    def _stop(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    if http_server is not None:
        http_server.stop()
    if grpc_server is not None:
        grpc_server.stop(grace=5).wait()
        close_servicer(servicer)
    log.info("stopped")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="corral", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gRPC server and the Ollama REST shim")
    p.add_argument("--grpc-address", default=_env("CORRAL_GRPC_ADDRESS", DEFAULT_GRPC),
                   help="gRPC listen address (env CORRAL_GRPC_ADDRESS, default %(default)s)")
    p.add_argument("--http-address", default=None,
                   help="REST listen address (default: OLLAMA_HOST, else 127.0.0.1:11434)")
    p.add_argument("--grpc-target", default=os.environ.get("CORRAL_GRPC_TARGET"),
                   help="gRPC service the shim talks to (with --no-grpc; env CORRAL_GRPC_TARGET)")
    p.add_argument("--no-grpc", action="store_true", help="run only the REST shim")
    p.add_argument("--no-http", action="store_true", help="run only the gRPC server")
    p.add_argument("--http-threads", type=int, default=64, help="REST worker threads (streams hold one each)")
    c = sub.add_parser("create", help="create a model from a Modelfile on a running server")
    c.add_argument("name")
    c.add_argument("-f", "--file", default="Modelfile", help="Modelfile path (default %(default)s)")
    c.add_argument("-q", "--quantize", default="", help="quantize to this type, e.g. q4_K_M")
    c.add_argument("--grpc-target", default=_env("CORRAL_GRPC_TARGET", DEFAULT_GRPC))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if _env("OLLAMA_DEBUG", "") not in ("", "0", "false") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        if args.no_grpc and args.no_http:
            parser.error("--no-grpc and --no-http leave nothing to run")
        return serve(args)
    if args.command == "create":
        from corral.service.cli.main.create import run_create

        return run_create(args.grpc_target, args.name, Path(args.file), args.quantize)
    return 2


if __name__ == "__main__":
    sys.exit(main())
